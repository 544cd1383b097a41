use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::block::Block;
use crate::chunkenc::SAMPLES_PER_CHUNK;
use crate::matcher::MatchOp;

const H: i64 = 60 * 60 * 1000;

fn head() -> TestHead {
    disk_head(HeadOptions::default())
}

/// A head that writes its closed chunks to files in a temporary directory (the
/// ingester's head), deleted with it. Small segments, so tests cross segment
/// boundaries and truncation deletes segments.
pub(super) struct TestHead {
    head: Head,
    /// Deleted when the head goes.
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for TestHead {
    type Target = Head;
    fn deref(&self) -> &Head {
        &self.head
    }
}

pub(super) fn disk_head(opts: HeadOptions) -> TestHead {
    let dir = tempfile::tempdir().unwrap();
    let head = Head::open(HeadOptions {
        chunks_dir: Some(dir.path().join("chunks_head")),
        chunk_segment_bytes: 4096,
        ..opts
    })
    .unwrap();
    TestHead { head, _dir: dir }
}

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

fn m(op: MatchOp, n: &str, v: &str) -> Matcher {
    Matcher::new(op, n, v).unwrap()
}

/// Samples of `d` within `[mint, maxt]`.
fn in_range(d: &HeadSeriesData, mint: i64, maxt: i64) -> Vec<(i64, f64)> {
    d.samples()
        .into_iter()
        .filter(|(t, _)| *t >= mint && *t <= maxt)
        .collect()
}

#[test]
fn append_select_round_trip_across_cuts() {
    let h = head();
    let (r, created) = h.get_or_create(&ls(&[("__name__", "up"), ("job", "a")]));
    assert!(created);
    assert_eq!(
        h.get_or_create(&ls(&[("job", "a"), ("__name__", "up")])),
        (r, false)
    );
    let want: Vec<(i64, f64)> = (0..2000)
        .map(|i| (i * 15_000, (i * 7 % 13) as f64 + 0.5))
        .collect();
    for (t, v) in &want {
        h.append(r, *t, *v).unwrap();
    }
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].series_ref, r);
    assert_eq!(got[0].samples(), want);
    // 2000 samples at 15 s = 8.3 h: 480 per 2 h window, cut into 4 chunks of 120.
    let chunks = &got[0].chunks;
    assert_eq!(chunks.len(), 17);
    for c in chunks {
        let n = u16::from_be_bytes([c.data[0], c.data[1]]) as usize;
        assert!(n <= SAMPLES_PER_CHUNK, "{n}");
        assert_eq!(
            c.min_time / (2 * H),
            c.max_time / (2 * H),
            "chunk straddles a block"
        );
        let s: Vec<_> = XorIter::new(&c.data).collect();
        assert_eq!((s[0].0, s[s.len() - 1].0), (c.min_time, c.max_time));
    }
    assert_eq!(h.stats(10).chunk_count, 17);
    // a sub-range selects only the overlapping chunks
    let got = h.select(&[], 3 * H, 3 * H + 60_000).unwrap();
    assert_eq!(got[0].chunks.len(), 1);
    assert_eq!(in_range(&got[0], 3 * H, 3 * H + 60_000).len(), 5);
    assert!(h.select(&[], 10 * H, 11 * H).unwrap().is_empty());
    assert!(h.select(&[], 5, 4).unwrap().is_empty());
    assert_eq!((h.min_time(), h.max_time()), (0, 1999 * 15_000));
}

#[test]
fn append_errors() {
    let h = head();
    let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
    h.append(r, 1000, 1.0).unwrap();
    assert_eq!(
        h.append(r, 999, 1.0),
        Err(AppendError::OutOfOrder {
            t: 999,
            last_t: 1000
        })
    );
    h.append(r, 1000, 1.0).unwrap(); // exact duplicate ignored
    assert_eq!(
        h.append(r, 1000, 2.0),
        Err(AppendError::DuplicateTimestamp {
            t: 1000,
            last_t: 1000
        })
    );
    // NaN duplicates compare by bits
    h.append(r, 2000, f64::NAN).unwrap();
    h.append(r, 2000, f64::NAN).unwrap();
    // too old: more than half a chunk range behind the head's newest sample
    h.append(r, 3 * H, 1.0).unwrap();
    assert_eq!(h.min_valid_time(), 2 * H);
    let (r2, _) = h.get_or_create(&ls(&[("__name__", "y")]));
    assert_eq!(
        h.append(r2, 2 * H - 1, 1.0),
        Err(AppendError::TooOld {
            t: 2 * H - 1,
            min_valid_t: 2 * H
        })
    );
    h.append(r2, 2 * H, 1.0).unwrap();
    assert_eq!(
        h.append(HeadSeriesRef(999), 3 * H, 1.0),
        Err(AppendError::UnknownSeries(HeadSeriesRef(999)))
    );
    let e = AppendError::OutOfOrder { t: 1, last_t: 2 };
    assert_eq!(e.reason(), "sample-out-of-order");
    assert!(e.to_string().contains("last timestamp is 2"), "{e}");
    // after a truncation nothing before the cut block's end is accepted
    h.truncate(3 * H + 10);
    assert_eq!(h.min_valid_time(), 3 * H + 10);
    assert!(matches!(
        h.append(r2, 3 * H + 5, 1.0),
        Err(AppendError::TooOld { .. })
    ));
    let got = h.select(&[], 0, i64::MAX).unwrap();
    assert_eq!(got.len(), 0, "every series had only older samples");
}

// --- matcher semantics against brute force ------------------------------------------

const NAMES: [&str; 4] = ["a", "b", "c", "d"];
const VALUES: [&str; 4] = ["", "x", "y", "zz"];
const PATTERNS: [&str; 10] = [
    "", "x", "x|y", ".*", ".+", "x|", "[xy]", "z.*", "y|zz|q", "a(",
];

fn series_strategy() -> impl Strategy<Value = Vec<Labels>> {
    proptest::collection::vec(
        (0usize..3, proptest::collection::vec(0usize..4, 4)).prop_map(|(n, vals)| {
            let metric = ["m", "n", "o"][n];
            let mut pairs: Vec<(&str, &str)> = vec![("__name__", metric)];
            for (i, v) in vals.iter().enumerate() {
                pairs.push((NAMES[i], VALUES[*v]));
            }
            Labels::from_pairs(pairs)
        }),
        1..60,
    )
}

fn matcher_strategy() -> impl Strategy<Value = Matcher> {
    (0usize..5, 0usize..4, 0usize..PATTERNS.len()).prop_filter_map("valid", |(n, op, p)| {
        let name = if n == 4 { "__name__" } else { NAMES[n] };
        let op = [
            MatchOp::Equal,
            MatchOp::NotEqual,
            MatchOp::RegexMatch,
            MatchOp::RegexNoMatch,
        ][op];
        Matcher::new(op, name, PATTERNS[p]).ok()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn matchers_match_brute_force(
        series in series_strategy(),
        ms in proptest::collection::vec(matcher_strategy(), 0..4),
        gc_first in 0usize..4,
    ) {
        let h = disk_head(HeadOptions { chunk_range_ms: 1000, stripes: 4, ..HeadOptions::default() });
        let mut uniq = series.clone();
        uniq.sort();
        uniq.dedup();
        for (i, s) in series.iter().enumerate() {
            let (r, _) = h.get_or_create(s);
            // the first `gc_first` distinct series only get old samples, then are collected
            let old = uniq.iter().position(|u| u == s).unwrap() < gc_first;
            let t = if old { i as i64 } else { 5000 + i as i64 };
            let _ = h.append(r, t, 1.0);
        }
        h.truncate(4000);
        h.truncate(4000); // sample-less series would need two
        let live: Vec<Labels> = uniq.iter().skip(gc_first).cloned().collect();
        let want: Vec<Labels> = live
            .iter()
            .filter(|s| ms.iter().all(|m| m.matches(s.get(&m.name).unwrap_or(""))))
            .cloned()
            .collect();
        let shown = ms.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        prop_assert_eq!(&h.series_labels(&ms), &want, "matchers {:?}", shown);
        let sel: Vec<Labels> = h.select(&ms, 0, i64::MAX).unwrap().into_iter().map(|d| d.labels).collect();
        prop_assert_eq!(&sel, &want);
        prop_assert_eq!(h.num_series(), live.len());
        // label names / values under the same matchers
        let mut names: Vec<String> = want.iter().flat_map(|s| s.iter().map(|l| l.name.to_string())).collect();
        names.sort();
        names.dedup();
        prop_assert_eq!(h.label_names(&ms), names);
        let mut vals: Vec<String> = want.iter().filter_map(|s| s.get("a").map(str::to_owned)).collect();
        vals.sort();
        vals.dedup();
        prop_assert_eq!(h.label_values("a", &ms), vals);
        for metric in ["m", "n", "o"] {
            prop_assert_eq!(
                h.series_count_for_metric(metric),
                live.iter().filter(|s| s.metric_name() == Some(metric)).count()
            );
        }
    }
}

#[test]
fn matcher_examples() {
    let h = head();
    for l in [
        ls(&[("__name__", "up"), ("job", "a")]),
        ls(&[("__name__", "up"), ("job", "b"), ("env", "prod")]),
        ls(&[("__name__", "up")]),
        ls(&[("__name__", "down"), ("env", "dev")]),
    ] {
        let (r, _) = h.get_or_create(&l);
        h.append(r, 10, 1.0).unwrap();
    }
    use MatchOp::*;
    let run = |ms: Vec<Matcher>| -> Vec<String> {
        h.series_labels(&ms).iter().map(|l| l.to_string()).collect()
    };
    assert_eq!(
        run(vec![m(Equal, "env", "")]),
        vec![r#"{__name__="up"}"#, r#"{__name__="up", job="a"}"#]
    );
    assert_eq!(run(vec![m(NotEqual, "env", "prod")]).len(), 3);
    assert_eq!(run(vec![m(NotEqual, "env", "")]).len(), 2);
    assert_eq!(
        run(vec![
            m(RegexMatch, "job", "a|b"),
            m(RegexNoMatch, "env", "prod")
        ]),
        vec![r#"{__name__="up", job="a"}"#]
    );
    assert_eq!(
        run(vec![m(RegexNoMatch, "__name__", "up")]),
        vec![r#"{__name__="down", env="dev"}"#]
    );
    assert!(run(vec![m(RegexNoMatch, "job", ".*")]).is_empty());
    // every value of a label every series has: the all-series list
    assert_eq!(run(vec![m(RegexMatch, "__name__", ".+")]).len(), 4);
    assert_eq!(run(vec![m(RegexMatch, "__name__", "up|d.*")]).len(), 4);
    // every value, but not every series has the label
    assert_eq!(run(vec![m(RegexMatch, "job", ".+")]).len(), 2);
    assert_eq!(run(vec![]).len(), 4);
    assert!(run(vec![m(Equal, "__name__", "nope")]).is_empty());
    assert_eq!(h.label_names(&[]), vec!["__name__", "env", "job"]);
    assert_eq!(h.label_values("job", &[]), vec!["a", "b"]);
    assert_eq!(
        h.label_values("env", &[m(Equal, "__name__", "up")]),
        vec!["prod"]
    );
}

#[test]
fn concurrent_appends() {
    let h = disk_head(HeadOptions {
        chunk_range_ms: 2 * H,
        stripes: 16,
        ..HeadOptions::default()
    });
    const THREADS: usize = 4;
    const SERIES: usize = 200;
    const SAMPLES: i64 = 300;
    let shared_refs: Vec<HeadSeriesRef> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..THREADS)
            .map(|th| {
                let h = &h;
                sc.spawn(move || {
                    let shared = ls(&[("__name__", "shared")]);
                    let (sr, _) = h.get_or_create(&shared);
                    let refs: Vec<HeadSeriesRef> = (0..SERIES)
                        .map(|i| {
                            let l = Labels::from_pairs([
                                ("__name__", format!("m{}", i % 5)),
                                ("thread", th.to_string()),
                                ("i", i.to_string()),
                            ]);
                            h.get_or_create(&l).0
                        })
                        .collect();
                    for t in 0..SAMPLES {
                        for (i, r) in refs.iter().enumerate() {
                            h.append(*r, t * 10_000, (th * 1000 + i) as f64 + t as f64)
                                .unwrap();
                        }
                        // every thread writes the same samples to the shared series
                        match h.append(sr, t * 10_000, t as f64) {
                            Ok(()) | Err(AppendError::OutOfOrder { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                    sr
                })
            })
            .collect();
        hs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert!(shared_refs.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(h.num_series(), THREADS * SERIES + 1);
    let got = h
        .select(&[m(MatchOp::RegexMatch, "__name__", "m.*")], 0, i64::MAX)
        .unwrap();
    assert_eq!(got.len(), THREADS * SERIES);
    for d in &got {
        let th: usize = d.labels.get("thread").unwrap().parse().unwrap();
        let i: usize = d.labels.get("i").unwrap().parse().unwrap();
        let want: Vec<(i64, f64)> = (0..SAMPLES)
            .map(|t| (t * 10_000, (th * 1000 + i) as f64 + t as f64))
            .collect();
        assert_eq!(d.samples(), want, "{}", d.labels);
    }
    let shared = h
        .select(&[Matcher::equal("__name__", "shared")], 0, i64::MAX)
        .unwrap();
    let want: Vec<(i64, f64)> = (0..SAMPLES).map(|t| (t * 10_000, t as f64)).collect();
    assert_eq!(shared[0].samples(), want);
    let refs: Vec<u64> = h.series_snapshot().iter().map(|(r, _)| r.0).collect();
    assert_eq!(
        refs,
        (1..=(THREADS * SERIES + 1) as u64).collect::<Vec<_>>()
    );
}

#[test]
fn stats_exact() {
    let h = head();
    let data = [
        ls(&[("__name__", "up"), ("job", "node"), ("instance", "a")]),
        ls(&[("__name__", "up"), ("job", "node"), ("instance", "b")]),
        ls(&[("__name__", "up"), ("job", "prom"), ("instance", "a")]),
        ls(&[
            ("__name__", "http_requests"),
            ("job", "prom"),
            ("code", "200"),
        ]),
    ];
    for (i, l) in data.iter().enumerate() {
        let (r, _) = h.get_or_create(l);
        for t in 0..130 {
            h.append(r, 1000 + i as i64 + t * 1000, 1.0).unwrap();
        }
    }
    let s = h.stats(10);
    assert_eq!(s.num_series, 4);
    // __name__: up, http_requests; job: node, prom; instance: a, b; code: 200
    assert_eq!(s.num_label_pairs, 7);
    assert_eq!(s.chunk_count, 8, "130 samples = 120 + 10 per series");
    assert_eq!((s.min_time, s.max_time), (1000, 3 + 130_000));
    let v = |p: &[(&str, u64)]| -> Vec<(String, u64)> {
        p.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    };
    assert_eq!(
        s.series_count_by_metric_name,
        v(&[("up", 3), ("http_requests", 1)])
    );
    assert_eq!(
        s.label_value_count_by_label_name,
        v(&[("__name__", 2), ("instance", 2), ("job", 2), ("code", 1)])
    );
    // Σ len(value) × series: __name__ 2×3 + 13×1 = 19; job 4×2 + 4×2 = 16; instance 3; code 3
    assert_eq!(
        s.memory_in_bytes_by_label_name,
        v(&[("__name__", 19), ("job", 16), ("code", 3), ("instance", 3)])
    );
    assert_eq!(
        s.series_count_by_label_value_pair,
        v(&[
            ("__name__=up", 3),
            ("instance=a", 2),
            ("job=node", 2),
            ("job=prom", 2),
            ("__name__=http_requests", 1),
            ("code=200", 1),
            ("instance=b", 1),
        ])
    );
    let top = h.stats(2);
    assert_eq!(
        top.series_count_by_label_value_pair,
        v(&[("__name__=up", 3), ("instance=a", 2)])
    );
    assert_eq!(top.label_value_count_by_label_name.len(), 2);
    assert_eq!(h.series_count_for_metric("up"), 3);
    assert_eq!(h.series_count_for_metric("nope"), 0);
}

#[test]
fn write_block_matches_select() {
    let dir = tempfile::tempdir().unwrap();
    let h = head();
    // 3 h of data at 10 s (chunks cut at the 2 h boundary) for 50 series
    let refs: Vec<HeadSeriesRef> = (0..50)
        .map(|i| {
            let l = Labels::from_pairs([
                ("__name__", format!("metric_{}", i % 3)),
                ("i", i.to_string()),
            ]);
            h.get_or_create(&l).0
        })
        .collect();
    for t in (0..3 * H).step_by(10_000) {
        for (i, r) in refs.iter().enumerate() {
            let t = t + i as i64;
            h.append(*r, t, (t / 1000) as f64 * 0.25 + i as f64)
                .unwrap();
        }
    }
    // an aligned block (chunks copied) and an unaligned one (edge chunks re-encoded)
    for (mint, maxt) in [(0, 2 * H), (H + 12_345, 2 * H + 600_001)] {
        let meta = h
            .write_block(dir.path(), mint, maxt, None)
            .unwrap()
            .unwrap();
        assert_eq!((meta.min_time, meta.max_time), (mint, maxt));
        let b = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
        let from_block = b.series_samples(&[], mint, maxt - 1).unwrap();
        let from_head: Vec<(Labels, Vec<(i64, f64)>)> = h
            .select(&[], mint, maxt - 1)
            .unwrap()
            .iter()
            .map(|d| (d.labels.clone(), in_range(d, mint, maxt - 1)))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        assert_eq!(from_block.len(), 50);
        assert_eq!(from_block, from_head);
        assert_eq!(
            meta.stats.num_samples,
            from_head.iter().map(|(_, s)| s.len() as u64).sum::<u64>()
        );
    }
    assert!(h
        .write_block(dir.path(), 10 * H, 12 * H, None)
        .unwrap()
        .is_none());
    assert!(h.write_block(dir.path(), 5, 5, None).is_err());
}

#[test]
fn truncate_collects_series_and_postings() {
    let h = disk_head(HeadOptions {
        chunk_range_ms: 10_000,
        stripes: 2,
        ..HeadOptions::default()
    });
    let old = ls(&[("__name__", "old"), ("job", "gone")]);
    let both = ls(&[("__name__", "both"), ("job", "kept")]);
    let fresh = ls(&[("__name__", "fresh"), ("job", "kept")]);
    let empty = ls(&[("__name__", "empty")]);
    let (ro, _) = h.get_or_create(&old);
    let (rb, _) = h.get_or_create(&both);
    for t in 0..3000 {
        h.append(ro, t, 1.0).unwrap();
        h.append(rb, t * 2, 1.0).unwrap();
    }
    let (rf, _) = h.get_or_create(&fresh);
    h.append(rf, 5000, 1.0).unwrap();
    let (re, _) = h.get_or_create(&empty);
    assert_eq!(h.num_series(), 4);
    let before = h.stats(10).chunk_count;
    let mem_before = h.approx_memory_bytes();

    assert_eq!(
        h.truncate(4000),
        1,
        "only `old`; `empty` gets a grace period"
    );
    assert_eq!(h.num_series(), 3);
    assert!(h.stats(10).chunk_count < before);
    assert!(h.approx_memory_bytes() < mem_before);
    assert_eq!(h.series_count_for_metric("old"), 0);
    assert_eq!(h.label_values("job", &[]), vec!["kept"]);
    assert!(!h.label_names(&[]).is_empty());
    assert!(h
        .select(&[Matcher::equal("job", "gone")], 0, i64::MAX)
        .unwrap()
        .is_empty());
    assert_eq!(h.append(ro, 6000, 1.0), Err(AppendError::UnknownSeries(ro)));
    // `both` keeps only chunks ending at or after 4000
    let d = h
        .select(&[Matcher::equal("__name__", "both")], 0, i64::MAX)
        .unwrap();
    let s = d[0].samples();
    assert!(s[0].0 > 4000 - 240 && s[0].0 <= 4000, "{}", s[0].0);
    assert_eq!(h.min_time(), s[0].0);
    // recreating the collected series gives a new ref
    let (ro2, created) = h.get_or_create(&old);
    assert!(created && ro2 > re);

    // second truncation collects the never-appended `empty` and the re-created `old`
    // is marked; a sample in between saves it
    assert_eq!(h.truncate(4000), 1);
    h.append(ro2, 6000, 1.0).unwrap();
    assert_eq!(h.truncate(4000), 0);
    assert_eq!(h.series_count_for_metric("empty"), 0);
    assert_eq!(h.append(re, 6000, 1.0), Err(AppendError::UnknownSeries(re)));
    // everything old: all collected; postings empty
    assert_eq!(h.truncate(100_000), 3);
    assert_eq!(h.num_series(), 0);
    assert!(h.label_names(&[]).is_empty());
    assert!(h.series_labels(&[]).is_empty());
    assert_eq!(h.stats(10).chunk_count, 0);
    assert_eq!(h.stats(10).num_label_pairs, 0);
    let _ = rf;
}

#[test]
fn replay_with_refs() {
    let h = head();
    let a = ls(&[("__name__", "a")]);
    let b = ls(&[("__name__", "b")]);
    assert_eq!(
        h.create_with_ref(HeadSeriesRef(10), &a).unwrap(),
        (HeadSeriesRef(10), true)
    );
    assert_eq!(
        h.create_with_ref(HeadSeriesRef(5), &b).unwrap(),
        (HeadSeriesRef(5), true)
    );
    // a repeated record for the same labels maps to the existing ref
    assert_eq!(
        h.create_with_ref(HeadSeriesRef(12), &a).unwrap(),
        (HeadSeriesRef(10), false)
    );
    // a ref taken by other labels is an error
    assert!(h
        .create_with_ref(HeadSeriesRef(10), &ls(&[("__name__", "c")]))
        .is_err());
    // new series never reuse a replayed ref
    let (c, created) = h.get_or_create(&ls(&[("__name__", "c")]));
    assert!(created);
    assert_eq!(c, HeadSeriesRef(11));
    // replayed samples: duplicates are skipped, not errors; an older sample was
    // accepted out of order (the WAL holds only accepted samples) and is kept
    assert_eq!(h.append_replay(HeadSeriesRef(10), 100, 1.0), Ok(true));
    assert_eq!(h.append_replay(HeadSeriesRef(10), 100, 1.0), Ok(false));
    assert_eq!(h.append_replay(HeadSeriesRef(10), 50, 1.0), Ok(true));
    assert_eq!(h.append_replay(HeadSeriesRef(10), 50, 3.0), Ok(false));
    assert_eq!(h.append_replay(HeadSeriesRef(10), 100, 2.0), Ok(false));
    assert_eq!(h.append_replay(HeadSeriesRef(10), 200, 2.0), Ok(true));
    assert!(h.append_replay(HeadSeriesRef(99), 200, 2.0).is_err());
    assert_eq!(h.append_replay(HeadSeriesRef(5), 300, 3.0), Ok(true));

    // checkpoint view
    let snap = h.series_snapshot();
    assert_eq!(
        snap,
        vec![
            (HeadSeriesRef(5), b.clone()),
            (HeadSeriesRef(10), a.clone()),
            (c, ls(&[("__name__", "c")]))
        ]
    );
    let mut since = BTreeMap::new();
    h.for_each_sample_since(150, |r, s| {
        since.insert(r.0, s.to_vec());
    })
    .unwrap();
    assert_eq!(
        since,
        BTreeMap::from([(5, vec![(300, 3.0)]), (10, vec![(200, 2.0)])])
    );

    // replaying into a fresh head reproduces the data
    let h2 = head();
    for (r, l) in &snap {
        h2.create_with_ref(*r, l).unwrap();
    }
    h.for_each_sample_since(i64::MIN, |r, s| {
        for (t, v) in s {
            assert!(h2.append_replay(r, *t, *v).unwrap());
        }
    })
    .unwrap();
    assert_eq!(
        h2.select(&[], 0, i64::MAX).unwrap(),
        h.select(&[], 0, i64::MAX).unwrap()
    );
}

#[test]
fn memory_accounting_is_plausible() {
    let h = head();
    assert!(h.approx_memory_bytes() < 64 << 10);
    for i in 0..1000 {
        let l = Labels::from_pairs([
            ("__name__", format!("m{}", i % 10)),
            ("job", "node".into()),
            ("instance", format!("host-{i}:9100")),
        ]);
        let (r, _) = h.get_or_create(&l);
        for t in 0..240 {
            h.append(r, t * 15_000, t as f64).unwrap();
        }
    }
    let per = h.approx_memory_bytes() / 1000;
    // two closed chunks of a steady counter (~40 B each) + an open chunk buffer, the
    // labels and the index: a few hundred bytes, well under Prometheus's ~4 KiB
    assert!((300..2048).contains(&per), "{per} bytes per series");
}

#[test]
fn window_is_anchored_at_the_clock_and_kept_by_a_flush_truncation() {
    let h = disk_head(HeadOptions::default()); // 2 h chunks: a 1 h window
    let (a, _) = h.get_or_create(&ls(&[("__name__", "a")]));
    let now = 10 * H;
    // a sample far ahead of the clock moves max_time, not the clock-anchored window
    h.append_validated(a, now + 5 * H, 1.0).unwrap();
    assert_eq!(h.min_valid_time(), now + 4 * H);
    assert_eq!(h.min_valid_time_at(now), now - H);

    let h = disk_head(HeadOptions::default());
    let (a, _) = h.get_or_create(&ls(&[("__name__", "a")]));
    h.append(a, now, 1.0).unwrap();
    h.append(b_or(&h), now - 5_000, 1.0).unwrap();
    // a flush cuts at the newest sample but keeps the window open
    h.truncate_keeping_window(now + 1, now - H);
    assert_eq!(h.min_valid_block(), now - H);
    assert_eq!(h.select(&[], i64::MIN, i64::MAX).unwrap().len(), 0);
    let b = h
        .get(&ls(&[("__name__", "b")]))
        .expect("kept: newest sample in the window");
    assert_eq!(h.last_sample(b), Ok(Some((now - 5_000, 1f64.to_bits()))));
    h.append(b, now - 4_000, 2.0).unwrap();
    assert!(matches!(
        h.append(b, now - 6_000, 2.0),
        Err(AppendError::OutOfOrder { .. })
    ));
}

fn b_or(h: &Head) -> HeadSeriesRef {
    h.get_or_create(&ls(&[("__name__", "b")])).0
}

#[test]
fn check_sample_is_prometheus_rule() {
    assert_eq!(check_sample(None, 5, 1), Ok(true));
    assert_eq!(check_sample(Some((5, 1)), 6, 2), Ok(true));
    assert_eq!(check_sample(Some((5, 1)), 5, 1), Ok(false));
    assert_eq!(
        check_sample(Some((5, 1)), 5, 2),
        Err(AppendError::DuplicateTimestamp { t: 5, last_t: 5 })
    );
    assert_eq!(
        check_sample(Some((5, 1)), 4, 1),
        Err(AppendError::OutOfOrder { t: 4, last_t: 5 })
    );
}

#[test]
fn closed_chunks_are_shared_with_readers_and_outlive_truncation() {
    // chunks kept in memory (a head without a directory) are shared
    let h = Head::new(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "up")]));
    let want: Vec<(i64, f64)> = (0..480).map(|i| (i * 15_000, i as f64)).collect();
    for (t, v) in &want {
        h.append(r, *t, *v).unwrap();
    }
    let a = h.series_chunks(r, 0, i64::MAX).unwrap();
    let b = h.series_chunks(r, 0, i64::MAX).unwrap();
    assert_eq!(a.len(), 4, "three closed chunks and the open one");
    let (closed, open) = a.split_at(3);
    for (x, y) in closed.iter().zip(&b) {
        assert_eq!(
            x.data.as_ptr(),
            y.data.as_ptr(),
            "closed chunks are not copied"
        );
    }
    assert_ne!(
        open[0].data.as_ptr(),
        b[3].data.as_ptr(),
        "the open chunk is"
    );
    // a middle range takes just the chunks it overlaps, still shared
    let mid = h.series_chunks(r, 130 * 15_000, 130 * 15_000).unwrap();
    assert_eq!(mid.len(), 1);
    assert_eq!(mid[0].data.as_ptr(), a[1].data.as_ptr());
    // truncation and new samples leave what a reader holds intact
    // drops the first two chunks: the third is kept from the shared bytes' middle
    h.truncate(H);
    for i in 480..600 {
        h.append(r, i * 15_000, i as f64).unwrap();
    }
    let held: Vec<(i64, f64)> = a.iter().flat_map(|c| XorIter::new(&c.data)).collect();
    assert_eq!(held, want);
    let now: Vec<(i64, f64)> = h
        .series_chunks(r, 0, i64::MAX)
        .unwrap()
        .iter()
        .flat_map(|c| XorIter::new(&c.data))
        .collect();
    let expect: Vec<(i64, f64)> = (240..600).map(|i| (i * 15_000, i as f64)).collect();
    assert_eq!(now, expect);
}

#[test]
fn batch_lookup_and_append_match_one_at_a_time() {
    // two heads fed the same samples: one by `append_validated`, one in batches
    let (one, many) = (head(), head());
    let names: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    let refs: Vec<_> = names
        .iter()
        .map(|n| {
            let l = ls(&[("__name__", "m"), ("i", n)]);
            let r = one.get_or_create(&l).0;
            assert_eq!(many.get_or_create(&l).0, r);
            r
        })
        .collect();
    // each series skips every 7th round, series apart: interleaved, not in ref order
    let mut samples = Vec::new();
    for round in 0..300i64 {
        for (k, r) in refs.iter().enumerate() {
            if !(round as usize + k).is_multiple_of(7) {
                samples.push((r.0, round * 15_000 + k as i64, (round * k as i64) as f64));
            }
        }
    }
    // out of order (to the buffer), a duplicate (ignored), an unknown series (refused)
    samples.push((refs[3].0, 1, 9.0));
    samples.push(*samples.last().unwrap());
    samples.push((u64::MAX, 5, 1.0));
    for &(r, t, v) in &samples {
        let res = one.append_validated(HeadSeriesRef(r), t, v);
        assert_eq!(res.is_err(), r == u64::MAX, "{r} {t}");
    }
    let mut refused = Vec::new();
    let mut order = Vec::new();
    for part in samples.chunks(1_000) {
        many.append_validated_many(part, &mut order, |r, t, e| refused.push((r, t, e)));
    }
    assert_eq!(
        refused,
        [(
            u64::MAX,
            5,
            AppendError::UnknownSeries(HeadSeriesRef(u64::MAX))
        )]
    );
    let (a, b) = (
        one.select(&[], i64::MIN, i64::MAX).unwrap(),
        many.select(&[], i64::MIN, i64::MAX).unwrap(),
    );
    assert_eq!(a.len(), b.len());
    for (a, b) in a.iter().zip(&b) {
        assert_eq!((a.series_ref, a.samples()), (b.series_ref, b.samples()));
    }
    assert_eq!(
        (many.min_time(), many.max_time(), many.stats(1).chunk_count),
        (one.min_time(), one.max_time(), one.stats(1).chunk_count)
    );

    // the batch lookup gives each series its newest sample, as `last_sample`
    let pairs: Vec<Vec<(&str, &str)>> = names
        .iter()
        .map(|n| vec![("__name__", "m"), ("i", n.as_str())])
        .chain([vec![("__name__", "absent")]])
        .collect();
    let batch: Vec<&[(&str, &str)]> = pairs.iter().map(|p| p.as_slice()).collect();
    let mut out = Vec::new();
    many.get_many_by_pairs_with_last(&batch, &mut out);
    let want: Vec<_> = refs
        .iter()
        .map(|r| Some((*r, many.last_sample(*r).unwrap())))
        .chain([None])
        .collect();
    assert_eq!(out, want);
    assert!(out[..300].iter().all(|o| o.unwrap().1.is_some()));
}
