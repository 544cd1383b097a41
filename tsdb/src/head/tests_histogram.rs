//! Histogram samples in the head: mixed with floats, Prometheus's duplicate and order
//! rules, its cutting rules for histogram chunks, blocks and WAL-facing helpers.

use super::*;
use crate::block::Block;
use crate::histogram::chunk::CounterResetHeader;
use crate::histogram::{CounterResetHint, HistogramIter, Span};

const H: i64 = 60 * 60 * 1000;

fn ls(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

/// A counter histogram growing with `i`: two positive buckets and one negative.
pub(super) fn hist(i: u64) -> Histogram {
    Histogram {
        schema: 1,
        zero_threshold: 0.001,
        zero_count: i,
        count: 4 * i,
        sum: 1.5 * i as f64,
        positive_spans: vec![Span {
            offset: 0,
            length: 2,
        }],
        positive_buckets: vec![i as i64, 0],
        negative_spans: vec![Span {
            offset: 1,
            length: 1,
        }],
        negative_buckets: vec![i as i64],
        ..Default::default()
    }
}

fn encodings(d: &HeadSeriesData) -> Vec<Encoding> {
    d.chunks.iter().map(|c| c.encoding).collect()
}

#[test]
fn floats_and_histograms_share_a_series_in_separate_chunks() {
    let h = super::tests::disk_head(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
    h.append(r, 1_000, 1.0).unwrap();
    h.append(r, 2_000, 2.0).unwrap();
    h.append_histogram(r, 3_000, &hist(1)).unwrap();
    h.append_histogram(r, 4_000, &hist(2)).unwrap();
    h.append_float_histogram(r, 5_000, &hist(3).to_float())
        .unwrap();
    h.append(r, 6_000, 6.0).unwrap();
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        encodings(&got[0]),
        vec![
            Encoding::Xor,
            Encoding::Histogram,
            Encoding::FloatHistogram,
            Encoding::Xor
        ]
    );
    let ranges: Vec<_> = got[0]
        .chunks
        .iter()
        .map(|c| (c.min_time, c.max_time))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (1_000, 2_000),
            (3_000, 4_000),
            (5_000, 5_000),
            (6_000, 6_000)
        ]
    );
    assert_eq!(
        got[0].samples(),
        vec![(1_000, 1.0), (2_000, 2.0), (6_000, 6.0)]
    );
    let hs = got[0].histograms();
    let ts: Vec<i64> = hs.iter().map(|(t, _)| *t).collect();
    assert_eq!(ts, vec![3_000, 4_000, 5_000]);
    for (i, (_, fh)) in hs.iter().enumerate() {
        let mut want = hist(i as u64 + 1).to_float();
        want.counter_reset_hint = fh.counter_reset_hint;
        assert_eq!(fh, &want);
    }
    assert_eq!(h.stats(10).chunk_count, 4);
    // series_chunks carries the encodings too
    let cs = h.series_chunks(r, 3_500, 4_500).unwrap();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].encoding, Encoding::Histogram);
}

#[test]
fn histogram_order_and_duplicate_rules() {
    let h = super::tests::disk_head(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
    h.append_histogram(r, 10_000, &hist(1)).unwrap();
    // exact duplicate: accepted, nothing stored
    h.append_histogram(r, 10_000, &hist(1)).unwrap();
    // same timestamp, other value
    assert_eq!(
        h.append_histogram(r, 10_000, &hist(2)),
        Err(AppendError::DuplicateTimestamp {
            t: 10_000,
            last_t: 10_000
        })
    );
    // a float where a histogram is, and a float histogram equal in value: both refused
    assert!(matches!(
        h.append(r, 10_000, 1.0),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    assert!(matches!(
        h.append(r, 10_000, f64::from_bits(HISTOGRAM_LAST_BITS)),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    assert!(matches!(
        h.append_float_histogram(r, 10_000, &hist(1).to_float()),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    assert_eq!(
        h.append_histogram(r, 9_000, &hist(2)),
        Err(AppendError::OutOfOrder {
            t: 9_000,
            last_t: 10_000
        })
    );
    // a histogram where a float is
    h.append(r, 11_000, 5.0).unwrap();
    assert!(matches!(
        h.append_histogram(r, 11_000, &hist(2)),
        Err(AppendError::DuplicateTimestamp { .. })
    ));
    // too old for the head's window
    h.append_histogram(r, 10 * H, &hist(3)).unwrap();
    assert!(matches!(
        h.append_histogram(r, 8 * H, &hist(3)),
        Err(AppendError::TooOld { .. })
    ));
    // checks without appending
    assert_eq!(h.check_histogram(r, 10 * H, &hist(3)), Ok(false));
    assert_eq!(h.check_histogram(r, 10 * H + 1, &hist(9)), Ok(true));
    assert!(h
        .check_float_histogram(r, 10 * H, &hist(3).to_float())
        .is_err());
    assert_eq!(
        h.last_sample(r).unwrap(),
        Some((10 * H, HISTOGRAM_LAST_BITS))
    );
    // unknown series
    assert_eq!(
        h.append_histogram(HeadSeriesRef(999), 11 * H, &hist(1)),
        Err(AppendError::UnknownSeries(HeadSeriesRef(999)))
    );
    // replay skips what append refuses
    assert_eq!(h.append_histogram_replay(r, 10 * H, &hist(3)), Ok(false));
    assert_eq!(h.append_histogram_replay(r, H, &hist(3)), Ok(false));
    assert_eq!(
        h.append_float_histogram_replay(r, 10 * H + 1, &hist(4).to_float()),
        Ok(true)
    );
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(got[0].histograms().len(), 3);
}

#[test]
fn counter_reset_cuts_with_reset_header_and_new_buckets_recode() {
    let h = super::tests::disk_head(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
    for i in 1..=5 {
        h.append_histogram(r, i * 1_000, &hist(i as u64 * 10))
            .unwrap();
    }
    // a reset
    h.append_histogram(r, 6_000, &hist(1)).unwrap();
    // a new positive bucket: same chunk, re-coded
    let mut wider = hist(2);
    wider.positive_spans = vec![Span {
        offset: 0,
        length: 3,
    }];
    wider.positive_buckets = vec![2, 0, 1];
    h.append_histogram(r, 7_000, &wider).unwrap();
    // a schema change
    let mut other = hist(3);
    other.schema = 0;
    h.append_histogram(r, 8_000, &other).unwrap();
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    let cs = &got[0].chunks;
    assert_eq!(cs.len(), 3);
    let headers: Vec<_> = cs.iter().map(|c| CounterResetHeader::of(&c.data)).collect();
    assert_eq!(
        headers,
        vec![
            CounterResetHeader::Unknown,
            CounterResetHeader::CounterReset,
            CounterResetHeader::Unknown
        ]
    );
    let second: Vec<_> = HistogramIter::new(&cs[1].data).collect();
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].1.positive_spans, wider.positive_spans);
    assert_eq!(second[0].1.to_float().positive_buckets, vec![1.0, 1.0, 0.0]);
    assert!(second[1].1.equals(&wider));
    assert_eq!(
        second[1].1.counter_reset_hint,
        CounterResetHint::NotCounterReset
    );
    assert_eq!(h.stats(10).chunk_count, 3);
}

#[test]
fn histogram_chunks_are_cut_by_size_and_chunk_range() {
    let h = super::tests::disk_head(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "big")]));
    // 100 buckets whose counts change irregularly: large samples
    let big = |i: u64| {
        let n = 100usize;
        let abs: Vec<i64> = (0..n as u64)
            .map(|j| (i * (j + 1) + (i * 7919 + j * 104_729) % 1000) as i64)
            .collect();
        let mut prev = 0;
        let deltas = abs
            .iter()
            .map(|a| {
                let d = a - prev;
                prev = *a;
                d
            })
            .collect();
        Histogram {
            schema: 3,
            count: abs.iter().sum::<i64>() as u64,
            sum: i as f64 * 3.3,
            positive_spans: vec![Span {
                offset: -50,
                length: n as u32,
            }],
            positive_buckets: deltas,
            ..Default::default()
        }
    };
    for i in 0..400u64 {
        h.append_histogram(r, i as i64 * 15_000, &big(i * 100))
            .unwrap();
    }
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    let cs = &got[0].chunks;
    let mut total = 0;
    for c in cs {
        let n = u16::from_be_bytes([c.data[0], c.data[1]]) as usize;
        total += n;
        assert_eq!(c.min_time / (2 * H), c.max_time / (2 * H), "straddles");
        // at most 2 KiB plus one sample, and at least 10 samples unless a range ends
        assert!(c.data.len() < 2048 + 1024, "{} bytes", c.data.len());
    }
    assert_eq!(total, 400);
    assert!(cs.len() > 5, "{} chunks", cs.len());
    // all but the last chunk of each 2 h window hold the minimum of 10 samples
    assert!(cs
        .windows(2)
        .filter(|w| w[0].max_time / (2 * H) == w[1].min_time / (2 * H))
        .all(|w| u16::from_be_bytes([w[0].data[0], w[0].data[1]]) >= 10));
    // decoded back
    let back = got[0].histograms();
    assert_eq!(back.len(), 400);
    for (i, (t, fh)) in back.iter().enumerate() {
        assert_eq!(*t, i as i64 * 15_000);
        assert_eq!(
            fh.positive_buckets,
            big(i as u64 * 100).to_float().positive_buckets
        );
    }
}

#[test]
fn write_block_carries_histogram_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let h = super::tests::disk_head(HeadOptions::default());
    let (a, _) = h.get_or_create(&ls(&[("__name__", "h"), ("k", "a")]));
    let (b, _) = h.get_or_create(&ls(&[("__name__", "fh"), ("k", "b")]));
    let (c, _) = h.get_or_create(&ls(&[("__name__", "f"), ("k", "c")]));
    for i in 0..600i64 {
        let t = i * 15_000;
        h.append_histogram(a, t, &hist(i as u64)).unwrap();
        h.append_float_histogram(b, t, &hist(i as u64 * 2).to_float())
            .unwrap();
        h.append(c, t, i as f64).unwrap();
    }
    // [1 h, 2 h): histogram chunks straddling the lower bound are re-encoded
    let meta = h.write_block(dir.path(), H, 2 * H, None).unwrap().unwrap();
    assert_eq!(meta.stats.num_samples, 3 * 240);
    assert_eq!(meta.stats.num_histogram_samples, 2 * 240);
    assert_eq!(meta.stats.num_float_samples, 240);
    let blk = Block::open(&dir.path().join(meta.ulid.to_string())).unwrap();
    let mut seen = 0;
    for s in blk.select(&[], i64::MIN, i64::MAX).unwrap() {
        let s = s.unwrap();
        let name = s.labels.get("__name__").unwrap().to_string();
        if name == "f" {
            assert_eq!(blk.samples(&s, i64::MIN, i64::MAX).unwrap().len(), 240);
            continue;
        }
        let got = blk.histograms(&s, i64::MIN, i64::MAX).unwrap();
        assert_eq!(got.len(), 240, "{name}");
        for (t, fh) in &got {
            let i = (t / 15_000) as u64;
            let mut want = if name == "h" { hist(i) } else { hist(i * 2) }.to_float();
            want.counter_reset_hint = fh.counter_reset_hint;
            assert_eq!(fh, &want);
        }
        assert_eq!(got[0].0, H);
        seen += 1;
        // a float read of a histogram chunk is a clear error
        assert!(blk.samples(&s, i64::MIN, i64::MAX).is_err());
    }
    assert_eq!(seen, 2);
}

#[test]
fn histograms_since_for_checkpoints_and_truncation() {
    let h = super::tests::disk_head(HeadOptions::default());
    let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
    for i in 0..10i64 {
        h.append_histogram(r, i * 1_000, &hist(i as u64)).unwrap();
    }
    h.append(r, 20_000, 1.0).unwrap();
    let mut got = Vec::new();
    h.for_each_histogram_since(5_000, |sr, s| {
        assert_eq!(sr, r);
        got.extend(s.iter().cloned());
    })
    .unwrap();
    assert_eq!(got.len(), 5);
    match &got[0] {
        (5_000, HistogramSample::Histogram(x)) => assert!(x.equals(&hist(5))),
        other => panic!("{other:?}"),
    }
    let mut floats = Vec::new();
    h.for_each_sample_since(0, |_, s| floats.extend_from_slice(s))
        .unwrap();
    assert_eq!(floats, vec![(20_000, 1.0)]);
    assert!(h.memory_usage().chunk_bytes > 0);
    // truncation drops the histogram chunk, keeps the float one
    h.truncate(15_000);
    let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
    assert_eq!(encodings(&got[0]), vec![Encoding::Xor]);
}

mod prop {
    use super::*;
    use crate::dedup::{decode_samples, Sample};
    use proptest::prelude::*;

    /// A sample to append: kind (0 float, 1 histogram, 2 float histogram, 3 gauge
    /// histogram), time step and a value seed.
    fn ops() -> impl Strategy<Value = Vec<(u8, i64, u64)>> {
        proptest::collection::vec((0u8..4, 0i64..400_000, 0u64..50), 1..300)
    }

    fn histogram_for(kind: u8, seed: u64, i: u64) -> Histogram {
        // mostly growing counters with occasional resets and layout changes
        let mut h = hist(if seed.is_multiple_of(7) {
            seed
        } else {
            i + seed
        });
        if seed.is_multiple_of(5) {
            h.positive_spans.push(Span {
                offset: 1,
                length: 1,
            });
            h.positive_buckets.push(1);
            h.count += i + seed + 1;
        }
        if seed.is_multiple_of(11) {
            h.schema = 2;
        }
        if kind == 3 {
            h.counter_reset_hint = CounterResetHint::Gauge;
        }
        h
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn mixed_series_read_back_as_appended(ops in ops()) {
            let h = super::tests::disk_head(HeadOptions { chunk_range_ms: 3_600_000, stripes: 4, ..HeadOptions::default() });
            let (r, _) = h.get_or_create(&ls(&[("__name__", "x")]));
            let mut t = 1_000i64;
            let mut want: Vec<(i64, Sample)> = Vec::new();
            for (i, (kind, dt, seed)) in ops.into_iter().enumerate() {
                t += dt;
                let s = match kind {
                    0 => Sample::Float(seed as f64),
                    1 | 3 => Sample::Histogram(histogram_for(kind, seed, i as u64)),
                    _ => Sample::FloatHistogram(histogram_for(kind, seed, i as u64).to_float()),
                };
                let res = match &s {
                    Sample::Float(v) => h.append_validated(r, t, *v),
                    Sample::Histogram(x) => h.append_histogram_validated(r, t, x),
                    Sample::FloatHistogram(x) => h.append_float_histogram_validated(r, t, x),
                };
                match res {
                    Ok(()) => {
                        if want.last().is_none_or(|(lt, _)| *lt != t) {
                            want.push((t, s));
                        }
                    }
                    Err(e) => prop_assert!(dt == 0, "{e} at {t}"),
                }
            }
            let got = h.select(&[], i64::MIN, i64::MAX).unwrap();
            let chunks = &got[0].chunks;
            for w in chunks.windows(2) {
                prop_assert!(w[0].max_time < w[1].min_time);
            }
            for c in chunks {
                prop_assert_eq!(c.min_time / 3_600_000, c.max_time / 3_600_000);
            }
            let owned: Vec<_> = chunks.iter().map(HeadChunk::to_encoded).collect();
            let back = decode_samples(&owned).unwrap();
            prop_assert_eq!(back.len(), want.len());
            for ((gt, gs), (wt, ws)) in back.iter().zip(&want) {
                prop_assert_eq!(gt, wt);
                let same = match (gs, ws) {
                    (Sample::Float(a), Sample::Float(b)) => a == b,
                    (Sample::Histogram(a), Sample::Histogram(b)) => {
                        a.to_float().equals(&b.to_float()) || same_nonzero(a, b)
                    }
                    (Sample::FloatHistogram(a), Sample::FloatHistogram(b)) => {
                        a.equals(b) || same_nonzero(&to_int(a), &to_int(b))
                    }
                    _ => false,
                };
                prop_assert!(same, "at {}: {:?} != {:?}", gt, gs, ws);
            }
            // and the block cut of everything is the same samples
            let for_block = decode_samples(&cut_chunks(&back, 3_600_000)).unwrap();
            prop_assert_eq!(for_block.len(), back.len());
        }
    }

    fn to_int(f: &FloatHistogram) -> Histogram {
        let deltas = |b: &[f64]| {
            let mut prev = 0i64;
            b.iter()
                .map(|x| {
                    let d = *x as i64 - prev;
                    prev = *x as i64;
                    d
                })
                .collect()
        };
        Histogram {
            schema: f.schema,
            zero_threshold: f.zero_threshold,
            zero_count: f.zero_count as u64,
            count: f.count as u64,
            sum: f.sum,
            positive_spans: f.positive_spans.clone(),
            negative_spans: f.negative_spans.clone(),
            positive_buckets: deltas(&f.positive_buckets),
            negative_buckets: deltas(&f.negative_buckets),
            ..Default::default()
        }
    }

    /// Equal once empty buckets a re-coded chunk or a backward insert added are ignored.
    fn same_nonzero(a: &Histogram, b: &Histogram) -> bool {
        let nz = |spans: &[Span], deltas: &[i64]| {
            let f = Histogram {
                positive_spans: spans.to_vec(),
                positive_buckets: deltas.to_vec(),
                ..Default::default()
            }
            .to_float();
            let mut out = Vec::new();
            let mut idx = 0i32;
            let mut k = 0usize;
            for (n, s) in f.positive_spans.iter().enumerate() {
                idx += s.offset + i32::from(n > 0);
                for j in 0..s.length {
                    if j > 0 {
                        idx += 1;
                    }
                    if f.positive_buckets[k] != 0.0 {
                        out.push((idx, f.positive_buckets[k]));
                    }
                    k += 1;
                }
                if s.length == 0 {
                    idx -= 1;
                }
            }
            out
        };
        a.schema == b.schema
            && a.count == b.count
            && a.zero_count == b.zero_count
            && a.sum.to_bits() == b.sum.to_bits()
            && nz(&a.positive_spans, &a.positive_buckets)
                == nz(&b.positive_spans, &b.positive_buckets)
            && nz(&a.negative_spans, &a.negative_buckets)
                == nz(&b.negative_spans, &b.negative_buckets)
    }
}
