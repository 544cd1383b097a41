//! The block format against the real thing: Prometheus 2.42's promtool and server read
//! what Strata writes, and Strata reads what promtool writes, sample for sample.

use std::path::Path;
use std::process::Command;

use strata_testkit::gen::{openmetrics, GenSpec};
use strata_testkit::procs::{promtool, promtool_dump, run, run_ok, strata, Prometheus};

fn write_input(dir: &Path, spec: &GenSpec) -> std::path::PathBuf {
    let (text, series) = openmetrics(spec);
    assert!(
        series >= 1000,
        "fixture must have at least 1000 series, has {series}"
    );
    let p = dir.join("input.om");
    std::fs::write(&p, text).unwrap();
    p
}

fn strata_dump(dir: &Path) -> String {
    run_ok(strata().args(["tools", "tsdb", "dump"]).arg(dir))
}

/// Lines of a dump, with a readable diff on mismatch.
fn assert_same_dump(ours: &str, theirs: &str, what: &str) {
    let a: Vec<&str> = ours.lines().collect();
    let b: Vec<&str> = theirs.lines().collect();
    assert!(!b.is_empty(), "{what}: promtool dumped nothing");
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x, y, "{what}: first difference at line {i}");
    }
    assert_eq!(a.len(), b.len(), "{what}: line counts differ");
}

#[test]
fn strata_reads_promtool_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write_input(tmp.path(), &GenSpec::default());
    let blocks = tmp.path().join("promtool-blocks");
    run_ok(
        Command::new(promtool())
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&blocks),
    );
    let theirs = promtool_dump(&blocks);
    let ours = strata_dump(&blocks);
    assert_same_dump(&ours, &theirs, "strata dump of promtool's blocks");
    // histograms, counters and gauges all made it
    for m in [
        r#"{__name__="request_duration_seconds_bucket", "#,
        r#"{__name__="http_requests_total", "#,
        r#"{__name__="temperature_celsius", "#,
        " NaN ",
        "e+",
    ] {
        assert!(ours.contains(m), "dump lacks {m}");
    }
}

#[test]
fn promtool_and_prometheus_read_strata_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = GenSpec::default();
    let input = write_input(tmp.path(), &spec);

    // The oracle: what promtool itself makes of the input.
    let reference = tmp.path().join("reference");
    run_ok(
        Command::new(promtool())
            .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
            .arg(&input)
            .arg(&reference),
    );
    let want = promtool_dump(&reference);

    let ours = tmp.path().join("strata-blocks");
    let table = run_ok(
        strata()
            .args(["tools", "tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&ours),
    );
    assert!(table.starts_with("BLOCK ULID"), "{table}");
    let blocks: Vec<_> = std::fs::read_dir(&ours)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        blocks.len(),
        std::fs::read_dir(&reference).unwrap().count(),
        "same block layout as promtool"
    );

    // promtool analyze accepts each block
    for b in &blocks {
        let id = b.file_name().unwrap().to_str().unwrap();
        let out = run_ok(
            Command::new(promtool())
                .args(["tsdb", "analyze"])
                .arg(&ours)
                .arg(id),
        );
        assert!(out.contains(&format!("Block ID: {id}")), "{out}");
        assert!(out.contains("Series:"), "{out}");
    }
    // promtool dump of our blocks is exactly the input's samples
    assert_same_dump(
        &promtool_dump(&ours),
        &want,
        "promtool dump of strata's blocks",
    );

    // A real Prometheus serves our blocks.
    let db = tmp.path().join("prom-data");
    strata_testkit::procs::copy_dir(&ours, &db);
    let prom = Prometheus::start(&db, "global: {}\n", &[]);
    let mut checked = 0;
    for line in want.lines().step_by(997).take(12) {
        let (series, rest) = line.rsplit_once('}').unwrap();
        let mut it = rest.split_whitespace();
        let value = it.next().unwrap();
        let ts: i64 = it.next().unwrap().parse().unwrap();
        let selector = format!("{series}}}");
        let result = prom.query(&selector, ts);
        let arr = result.as_array().unwrap();
        assert_eq!(arr.len(), 1, "{selector} at {ts}: {result}");
        let got = arr[0]["value"][1].as_str().unwrap();
        let want_v: f64 = value.parse().unwrap_or(f64::NAN);
        let got_v: f64 = got.parse().unwrap_or(f64::NAN);
        if want_v.is_nan() {
            assert!(got_v.is_nan(), "{selector} at {ts}: want NaN got {got}");
        } else {
            assert_eq!(got_v, want_v, "{selector} at {ts}");
        }
        checked += 1;
    }
    assert!(checked >= 10);
}

/// Make one small block with strata and return (blocks dir, block dir).
fn small_block(tmp: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let spec = GenSpec {
        duration_ms: 30 * 60 * 1000,
        ..GenSpec::default()
    };
    let input = write_input(tmp, &spec);
    let out = tmp.join("blocks");
    run_ok(
        strata()
            .args(["tools", "tsdb", "create-blocks-from", "openmetrics", "-q"])
            .arg(&input)
            .arg(&out),
    );
    let block = std::fs::read_dir(&out)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    (out, block)
}

/// Run `strata tools tsdb dump` on a damaged block: it must fail cleanly (not panic)
/// with a message naming `file` and, when given, an offset.
fn assert_clean_failure(dir: &Path, file: &str, want_offset: bool) -> String {
    let out = run(strata().args(["tools", "tsdb", "dump"]).arg(dir));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "dump of damaged block succeeded");
    assert_ne!(out.status.code(), Some(101), "panicked: {stderr}");
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert!(
        stderr.contains(file),
        "error does not name {file}: {stderr}"
    );
    if want_offset {
        assert!(
            stderr.contains("offset"),
            "error does not name the offset: {stderr}"
        );
    }
    stderr
}

#[test]
fn truncated_index_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, block) = small_block(tmp.path());
    let index = block.join("index");
    let len = std::fs::metadata(&index).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap();
    f.set_len(len / 2).unwrap();
    assert_clean_failure(&dir, "index", true);
}

#[test]
fn flipped_chunk_byte_is_a_crc_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, block) = small_block(tmp.path());
    let seg = block.join("chunks").join("000001");
    let mut data = std::fs::read(&seg).unwrap();
    let i = data.len() / 2;
    data[i] ^= 0x5a;
    std::fs::write(&seg, data).unwrap();
    let err = assert_clean_failure(&dir, "000001", true);
    assert!(
        err.to_lowercase().contains("crc") || err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn missing_meta_json_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (_dir, block) = small_block(tmp.path());
    std::fs::remove_file(block.join("meta.json")).unwrap();
    assert_clean_failure(&block, "meta.json", false);
}
