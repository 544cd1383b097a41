//! Fuzz targets for every decoder Strata runs on bytes it does not control — remote
//! write 1.0 and 2.0 bodies (snappy + protobuf), remote read requests, PromQL text, and
//! the block and WAL files it reads back (index, chunk segments, chunk encodings, WAL
//! records and segments, `meta.json`) — and a small mutation fuzzer that runs them on
//! the stable toolchain.
//!
//! The fuzzer has no compiler instrumentation. Its feedback is the decoder's own
//! answer: each target reports a signal (the kind of error, with numbers taken out, or
//! the shape of a successful decode), and an input that produced a signal not seen
//! before joins the corpus. That steers mutation into the error paths of each format
//! much as coverage would, at no build cost. A target passes an input when it returns;
//! a panic is a finding, kept as a regression input under `fuzz/crashes/<target>/`.

pub mod mutate;
pub mod targets;

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// One decoder under test.
pub struct Target {
    pub name: &'static str,
    /// Decode `data`; must never panic. Returns a signal describing what happened.
    pub run: fn(&[u8]) -> u64,
    /// Valid inputs made with the real encoders, to mutate from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens the mutator may splice in (keywords, magic numbers).
    pub dict: &'static [&'static [u8]],
    /// Largest input worth generating.
    pub max_len: usize,
}

/// A panic found: the input and the panic's message.
#[derive(Debug, Clone)]
pub struct Crash {
    pub input: Vec<u8>,
    pub message: String,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    pub corpus: usize,
    pub signals: usize,
    pub crashes: Vec<Crash>,
}

/// A signal from an error: its message without what varies from input to input —
/// numbers, hexadecimal words (checksums) and quoted text (label names, snippets of the
/// input) — so that only a new *kind* of error counts as new.
pub fn error_signal(e: &dyn std::fmt::Display) -> u64 {
    let msg = e.to_string();
    let mut norm = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    for word in msg.split_inclusive(|c: char| !c.is_alphanumeric()) {
        let mut kept = String::new();
        for c in word.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '`' || c == '\'' => quote = Some(c),
                None => kept.push(c),
            }
        }
        let core = kept.trim_end_matches(|c: char| !c.is_alphanumeric());
        if core.chars().all(|c| c.is_ascii_hexdigit()) {
            kept = kept[core.len()..].to_string();
        }
        norm.push_str(&kept);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    norm.hash(&mut h);
    h.finish() | 1
}

/// A signal from values describing a successful decode.
pub fn ok_signal(parts: &[u64]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish() & !1
}

/// Run `input` through `t`, turning a panic into its message.
pub fn run_one(t: &Target, input: &[u8]) -> Result<u64, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(input))).map_err(|p| {
        p.downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-string payload".into())
    })
}

/// Silence the default panic hook while fuzzing (panics are expected findings and are
/// reported with their input); restored by dropping the guard.
type PanicHook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send>;

pub struct QuietPanics(Option<PanicHook>);

impl QuietPanics {
    pub fn new() -> Self {
        if std::env::var_os("STRATA_FUZZ_LOUD").is_some() {
            return QuietPanics(None);
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        QuietPanics(Some(prev))
    }
}

impl Default for QuietPanics {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            std::panic::set_hook(h);
        }
    }
}

/// Mutate from the target's seeds plus `extra` inputs for `iterations` inputs, seeded
/// by `seed` (the same seed gives the same inputs). `progress` is called now and then
/// with the report so far.
pub fn fuzz(
    t: &Target,
    extra: &[Vec<u8>],
    iterations: u64,
    seed: u64,
    mut progress: impl FnMut(&Report),
) -> Report {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut corpus: Vec<Vec<u8>> = (t.seeds)();
    corpus.extend(extra.iter().cloned());
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut seen = HashSet::new();
    let mut report = Report::default();
    let mut crash_msgs = HashSet::new();
    for input in corpus.clone() {
        match run_one(t, &input) {
            Ok(s) => {
                seen.insert(s);
            }
            Err(m) => {
                if crash_msgs.insert(m.clone()) {
                    report.crashes.push(Crash { input, message: m });
                }
            }
        }
    }
    let mut buf = Vec::new();
    for i in 0..iterations {
        let base = &corpus[rng.random_range(0..corpus.len())];
        buf.clear();
        buf.extend_from_slice(base);
        let other = &corpus[rng.random_range(0..corpus.len())];
        mutate::mutate(&mut rng, &mut buf, other, t.dict, t.max_len);
        report.inputs += 1;
        match run_one(t, &buf) {
            Ok(s) => {
                // corpus growth is capped so a target with endless signals stays fast
                if seen.insert(s) && corpus.len() < 4096 {
                    corpus.push(buf.clone());
                }
            }
            Err(m) => {
                if crash_msgs.insert(m.clone()) {
                    report.crashes.push(Crash {
                        input: buf.clone(),
                        message: m,
                    });
                }
            }
        }
        if i % 100_000 == 99_999 {
            report.corpus = corpus.len();
            report.signals = seen.len();
            progress(&report);
        }
    }
    report.corpus = corpus.len();
    report.signals = seen.len();
    report
}

/// `fuzz/<kind>/<target>` in the source tree (`kind` is `corpus` or `crashes`).
pub fn dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(kind)
        .join(target)
}

/// Every file under `fuzz/corpus/<target>/` and `fuzz/crashes/<target>/`.
pub fn kept_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for kind in ["corpus", "crashes"] {
        let Ok(rd) = std::fs::read_dir(dir(kind, target)) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths {
            if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

/// A stable file name for an input (FNV-1a of its bytes).
pub fn input_name(input: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Pick a random seed from the clock (for runs by hand).
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_signals_ignore_what_varies_per_input() {
        let a = error_signal(&"chunk checksum mismatch: stored fd80edfe, computed a7dab7a4");
        let b = error_signal(&"chunk checksum mismatch: stored 0123abcd, computed 99");
        assert_eq!(a, b);
        let c = error_signal(&r#"unexpected character "x" in label "job""#);
        let d = error_signal(&r#"unexpected character "{" in label "instance""#);
        assert_eq!(c, d);
        assert_ne!(a, c);
    }
}
