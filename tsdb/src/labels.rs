//! Label sets and the string interner behind them.
//!
//! A series is identified by its sorted label set (`__name__` included). Names and
//! values are [`Symbol`]s handed out by an [`Interner`], so a million series that share
//! `job="node"` hold one copy of each string.

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{self, AtomicU32, Ordering};
use std::sync::Arc;

/// The label that carries the metric name.
pub const METRIC_NAME: &str = "__name__";

/// An interned, immutable, reference-counted string behind one thin pointer.
///
/// `Arc<str>` is a 16-byte fat pointer, so a label pair took 32 bytes and the label
/// sets were the head's biggest allocation site (≈ 213 B per series). A `Symbol` is 8
/// bytes (a `Label` 16): the count and length live in the allocation's header, before
/// the bytes. Behaves as `Arc<str>` did: clones share, `Deref`s to `str`, hashes as
/// `str` (so `HashSet<Symbol>::get(&str)` works) and compares by contents.
pub struct Symbol {
    ptr: NonNull<SymbolHeader>,
}

/// The allocation's header; the string's bytes follow it. `u32` count and length keep
/// it at 8 bytes (a short unique value such as an instance name then fits glibc's
/// smallest chunk): label strings are far below 4 GiB, and a count past `i32::MAX`
/// aborts as `Arc` does past `isize::MAX`.
#[repr(C)]
struct SymbolHeader {
    count: AtomicU32,
    len: u32,
}

/// Bytes a symbol's allocation holds besides its string (for memory estimates).
pub const SYMBOL_HEADER_BYTES: usize = std::mem::size_of::<SymbolHeader>();

const MAX_REFCOUNT: u32 = i32::MAX as u32;

const _: () = assert!(std::mem::size_of::<Symbol>() == 8);
const _: () = assert!(std::mem::size_of::<Option<Symbol>>() == 8);
const _: () = assert!(std::mem::size_of::<Label>() == 16);

// SAFETY: the bytes are never written after construction and the count is atomic, as
// in `Arc<str>`, which is `Send + Sync`.
unsafe impl Send for Symbol {}
// SAFETY: as above.
unsafe impl Sync for Symbol {}

impl Symbol {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(
            SYMBOL_HEADER_BYTES + len,
            std::mem::align_of::<SymbolHeader>(),
        )
        .expect("symbol layout")
    }

    /// A new allocation holding a copy of `s` (not interned: see [`Interner`]).
    pub fn new(s: &str) -> Symbol {
        let len = u32::try_from(s.len()).expect("label string of 4 GiB or more");
        let layout = Self::layout(s.len());
        // SAFETY: the layout's size is at least the header's, so not zero.
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw.cast::<SymbolHeader>()) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: `raw` is a fresh allocation of header + `s.len()` bytes, aligned for
        // the header; the bytes go right after it and do not overlap `s`.
        unsafe {
            ptr.as_ptr().write(SymbolHeader {
                count: AtomicU32::new(1),
                len,
            });
            std::ptr::copy_nonoverlapping(s.as_ptr(), raw.add(SYMBOL_HEADER_BYTES), s.len());
        }
        Symbol { ptr }
    }

    fn header(&self) -> &SymbolHeader {
        // SAFETY: the allocation lives while `self` holds a count.
        unsafe { self.ptr.as_ref() }
    }

    pub fn as_str(&self) -> &str {
        let len = self.header().len as usize;
        // SAFETY: `len` bytes of valid UTF-8 (copied from a `str`) follow the header and
        // are never written again; the pointer keeps the whole allocation's provenance.
        unsafe {
            let bytes = self.ptr.as_ptr().cast::<u8>().add(SYMBOL_HEADER_BYTES);
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(bytes, len))
        }
    }

    /// Whether both are the same allocation (as `Arc::ptr_eq`).
    pub fn ptr_eq(a: &Symbol, b: &Symbol) -> bool {
        a.ptr == b.ptr
    }

    /// How many `Symbol`s share this allocation (as `Arc::strong_count`).
    pub fn strong_count(this: &Symbol) -> usize {
        this.header().count.load(Ordering::Acquire) as usize
    }
}

impl Clone for Symbol {
    fn clone(&self) -> Symbol {
        // Relaxed as `Arc::clone`: a new reference is made from an existing one, so the
        // allocation cannot go away meanwhile.
        let old = self.header().count.fetch_add(1, Ordering::Relaxed);
        if old > MAX_REFCOUNT {
            std::process::abort();
        }
        Symbol { ptr: self.ptr }
    }
}

impl Drop for Symbol {
    fn drop(&mut self) {
        // Release/Acquire as `Arc::drop`: every use by other owners happens before the
        // last owner frees the allocation.
        if self.header().count.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        atomic::fence(Ordering::Acquire);
        let layout = Self::layout(self.header().len as usize);
        // SAFETY: the count was 1, so this is the last owner; allocated with `layout`.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

impl Deref for Symbol {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// As `str`'s, which `Borrow<str>` lookups require.
impl Hash for Symbol {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq for Symbol {
    fn eq(&self, o: &Symbol) -> bool {
        Symbol::ptr_eq(self, o) || self.as_str() == o.as_str()
    }
}

impl Eq for Symbol {}

impl PartialOrd for Symbol {
    fn partial_cmp(&self, o: &Symbol) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Symbol {
    fn cmp(&self, o: &Symbol) -> std::cmp::Ordering {
        self.as_str().cmp(o.as_str())
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, o: &str) -> bool {
        self.as_str() == o
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, o: &&str) -> bool {
        self.as_str() == *o
    }
}

impl Default for Symbol {
    fn default() -> Symbol {
        Symbol::new("")
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Symbol {
    fn from(s: &str) -> Symbol {
        Symbol::new(s)
    }
}

impl From<&String> for Symbol {
    fn from(s: &String) -> Symbol {
        Symbol::new(s)
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Symbol {
        Symbol::new(&s)
    }
}

impl From<Box<str>> for Symbol {
    fn from(s: Box<str>) -> Symbol {
        Symbol::new(&s)
    }
}

impl From<Arc<str>> for Symbol {
    fn from(s: Arc<str>) -> Symbol {
        Symbol::new(&s)
    }
}

impl From<std::borrow::Cow<'_, str>> for Symbol {
    fn from(s: std::borrow::Cow<'_, str>) -> Symbol {
        Symbol::new(&s)
    }
}

/// Hands out one shared copy of each distinct string.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Symbol>,
}

impl Interner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `s`, made on first sight.
    pub fn intern(&mut self, s: &str) -> Symbol {
        if let Some(sym) = self.set.get(s) {
            return sym.clone();
        }
        let sym = Symbol::new(s);
        self.set.insert(sym.clone());
        sym
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Drop strings no label set holds any more.
    pub fn gc(&mut self) {
        self.set.retain(|s| Symbol::strong_count(s) > 1);
    }
}

/// One name/value pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Label {
    pub name: Symbol,
    pub value: Symbol,
}

/// By name, then value. Interned strings that are the same copy compare equal without
/// reading them: sorting 100k head series by labels spent most of its time comparing
/// `__name__` with `__name__`.
impl Ord for Label {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        fn sym(a: &Symbol, b: &Symbol) -> std::cmp::Ordering {
            if Symbol::ptr_eq(a, b) {
                std::cmp::Ordering::Equal
            } else {
                a.cmp(b)
            }
        }
        sym(&self.name, &o.name).then_with(|| sym(&self.value, &o.value))
    }
}

impl PartialOrd for Label {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Label {
    pub fn new(name: impl Into<Symbol>, value: impl Into<Symbol>) -> Self {
        Label {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// A label set sorted by name, with unique names and no empty values. Ordering is
/// Prometheus's `labels.Compare`: pairwise by name then value, then by length.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<Label>);

impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Build from pairs in any order; empty values are dropped (Prometheus treats an
    /// empty value as an absent label) and a repeated name keeps its last value.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut v: Vec<Label> = pairs
            .into_iter()
            .filter(|(_, val)| !val.as_ref().is_empty())
            .map(|(n, val)| Label::new(n.as_ref(), val.as_ref()))
            .collect();
        Self::normalise(&mut v);
        Labels(v)
    }

    /// Build from labels already interned; sorts and de-duplicates.
    pub fn from_vec(mut v: Vec<Label>) -> Self {
        v.retain(|l| !l.value.is_empty());
        Self::normalise(&mut v);
        Labels(v)
    }

    /// Build from labels the caller guarantees are sorted by name, unique and non-empty
    /// (as read from a block index).
    pub fn from_sorted_unchecked(v: Vec<Label>) -> Self {
        debug_assert!(v.windows(2).all(|w| w[0].name < w[1].name));
        Labels(v)
    }

    fn normalise(v: &mut Vec<Label>) {
        // stable sort keeps insertion order among equal names, so "last wins" below
        v.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<Label> = Vec::with_capacity(v.len());
        for l in v.drain(..) {
            match out.last_mut() {
                Some(last) if last.name == l.name => *last = l,
                _ => out.push(l),
            }
        }
        *v = out;
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .binary_search_by(|l| (*l.name).cmp(name))
            .ok()
            .map(|i| &*self.0[i].value)
    }

    /// The metric name, if any.
    pub fn metric_name(&self) -> Option<&str> {
        self.get(METRIC_NAME)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Label> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[Label] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<Label> {
        self.0
    }

    /// A copy with `name` set to `value` (removed when `value` is empty).
    pub fn with(&self, name: &str, value: &str) -> Labels {
        let mut v: Vec<Label> = self
            .0
            .iter()
            .filter(|l| &*l.name != name)
            .cloned()
            .collect();
        if !value.is_empty() {
            v.push(Label::new(name, value));
        }
        Self::normalise(&mut v);
        Labels(v)
    }

    /// A copy without the named labels.
    pub fn without(&self, names: &[&str]) -> Labels {
        Labels(
            self.0
                .iter()
                .filter(|l| !names.contains(&&*l.name))
                .cloned()
                .collect(),
        )
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Prometheus's `labels.Labels.String()`: `{__name__="up", job="node"}` with values
/// quoted as Go's `strconv.Quote` does.
impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, l) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(&l.name)?;
            f.write_str("=")?;
            go_quote(f, &l.value)?;
        }
        f.write_str("}")
    }
}

/// Write `s` quoted as Go's `strconv.Quote` does, so our output matches promtool's.
pub fn go_quote(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\u{07}' => out.write_str("\\a")?,
            '\u{08}' => out.write_str("\\b")?,
            '\u{0c}' => out.write_str("\\f")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{0b}' => out.write_str("\\v")?,
            c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(out, "\\x{:02x}", c as u32)?,
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    write!(out, "\\u{:04x}", c as u32)?
                } else {
                    write!(out, "\\U{:08x}", c as u32)?
                }
            }
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

/// Format a float as Go's `%g` verb does (`strconv.FormatFloat(v, 'g', -1, 64)`):
/// shortest round-trip digits, exponent form when the decimal exponent is < -4 or >= 6
/// (Go fixes the cut-off at 6 for the shortest precision). promtool prints values so.
pub fn go_format_g(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "-1.2345e-7".
    let e = format!("{:e}", v);
    let (mantissa, exp) = e.split_once('e').expect("exponent form");
    let exp: i32 = exp.parse().expect("exponent");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        let a = exp.unsigned_abs();
        if a < 10 {
            out.push('0');
        }
        out.push_str(&a.to_string());
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = (exp + 1) as usize;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorted_unique_and_empty_dropped() {
        let l = Labels::from_pairs([("b", "2"), ("a", "1"), ("c", ""), ("a", "3")]);
        assert_eq!(l.to_string(), r#"{a="3", b="2"}"#);
        assert_eq!(l.get("a"), Some("3"));
        assert_eq!(l.get("c"), None);
    }

    #[test]
    fn ordering_matches_prometheus_compare() {
        let a = Labels::from_pairs([("__name__", "a"), ("x", "1")]);
        let b = Labels::from_pairs([("__name__", "a"), ("x", "2")]);
        let c = Labels::from_pairs([("__name__", "a")]);
        assert!(c < a && a < b);
        // uppercase sorts before "__name__" bytewise, as in Go
        let u = Labels::from_pairs([("A", "1"), ("__name__", "m")]);
        assert_eq!(u.as_slice()[0].name.as_ref(), "A");
    }

    #[test]
    fn interner_shares() {
        let mut i = Interner::new();
        let a = i.intern("job");
        let b = i.intern("job");
        assert!(Symbol::ptr_eq(&a, &b));
        assert_eq!(i.len(), 1);
        drop((a, b));
        i.gc();
        assert!(i.is_empty());
    }

    #[test]
    fn symbol_clones_share_and_drops_count_down() {
        let a = Symbol::from("job");
        assert_eq!(Symbol::strong_count(&a), 1);
        let clones: Vec<Symbol> = (0..1000).map(|_| a.clone()).collect();
        assert_eq!(Symbol::strong_count(&a), 1001);
        assert!(clones
            .iter()
            .all(|c| Symbol::ptr_eq(c, &a) && &**c == "job"));
        // Drop the clones on several threads at once: the count must come back to
        // exactly one (a lost decrement leaks, an extra one frees early).
        let mut per_thread: Vec<Vec<Symbol>> = (0..4).map(|_| Vec::new()).collect();
        for (i, c) in clones.into_iter().enumerate() {
            per_thread[i % 4].push(c);
        }
        std::thread::scope(|s| {
            for v in per_thread {
                let a = &a;
                s.spawn(move || {
                    // clone and drop more while the others drop theirs
                    for c in &v {
                        drop(c.clone());
                        assert_eq!(&**a, "job");
                    }
                    drop(v);
                });
            }
        });
        assert_eq!(Symbol::strong_count(&a), 1);
        assert_eq!(a.as_str(), "job");
    }

    #[test]
    fn symbol_empty_and_non_ascii() {
        let e = Symbol::default();
        assert_eq!(&*e, "");
        assert!(e.is_empty());
        assert_eq!(e, Symbol::from(String::new()));
        let s = Symbol::from("é→😀\u{0}x");
        assert_eq!(&*s, "é→😀\u{0}x");
        assert_eq!(s.len(), "é→😀\u{0}x".len());
        assert_eq!(s.chars().count(), 5);
        assert_eq!(format!("{s}"), "é→😀\u{0}x");
        assert_eq!(format!("{s:?}"), format!("{:?}", "é→😀\u{0}x"));
        let long = "x".repeat(100_000);
        assert_eq!(&*Symbol::from(long.clone()), long);
    }

    #[test]
    fn symbol_hashes_and_compares_as_str() {
        use std::collections::hash_map::DefaultHasher;
        fn h<T: Hash + ?Sized>(t: &T) -> u64 {
            let mut s = DefaultHasher::new();
            t.hash(&mut s);
            s.finish()
        }
        for s in ["", "a", "__name__", "é😀"] {
            assert_eq!(h(&Symbol::from(s)), h(s));
        }
        let mut set: HashSet<Symbol> = HashSet::new();
        set.insert(Symbol::from("instance"));
        assert!(set.contains("instance") && !set.contains("instanc"));
        // different allocations, same contents
        let (a, b) = (Symbol::from("b"), Symbol::from("b"));
        assert!(!Symbol::ptr_eq(&a, &b));
        assert_eq!(a, b);
        let (sa, sba) = (Symbol::from("a"), Symbol::from("ba"));
        assert!(sa < a && a < sba);
        let (upper, underscore) = (Symbol::from("Z"), Symbol::from("_"));
        assert!(upper < underscore, "bytewise, as Go");
        assert_eq!(a, "b");
    }

    #[test]
    fn interner_gc_frees_unheld_strings() {
        let mut i = Interner::new();
        let held = i.intern("held");
        drop(i.intern("dropped"));
        assert_eq!(Symbol::strong_count(&held), 2);
        i.gc();
        assert_eq!(i.len(), 1);
        assert_eq!(
            Symbol::strong_count(&held),
            2,
            "a held string stays interned"
        );
        assert!(Symbol::ptr_eq(&i.intern("held"), &held));
        drop(i);
        assert_eq!(
            Symbol::strong_count(&held),
            1,
            "the interner's copy is released"
        );
    }

    #[test]
    fn go_quote_escapes() {
        let mut s = String::new();
        go_quote(&mut s, "a\"b\\c\nd\u{1}é").unwrap();
        assert_eq!(s, r#""a\"b\\c\nd\x01é""#);
    }

    #[test]
    fn go_g_format() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (123456.0, "123456"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5, "1.5"),
            (-2.25e-7, "-2.25e-07"),
            (1e21, "1e+21"),
            (1e100, "1e+100"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (100000.5, "100000.5"),
            (0.1 + 0.2, "0.30000000000000004"),
        ];
        for (v, want) in cases {
            assert_eq!(go_format_g(v), want, "{v}");
        }
    }
}
