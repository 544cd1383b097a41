//! Byte-identity and behaviour tests of the histogram chunk encodings.
//!
//! Prometheus's Go tests carry no byte vectors for histogram chunks, so the expected
//! bytes here come from `testdata_ref.py`, an independent transcription of
//! `histogram.go` / `float_histogram.go` / `varbit.go` / `xorWrite` working on bit
//! strings (run it with `python3` to regenerate them).

use proptest::prelude::*;

use super::chunk::{AppendOutcome, CounterResetHeader, FloatHistogramChunk, HistogramChunk};
use super::*;
use crate::chunkenc::STALE_NAN_BITS;

fn sp(v: &[(i32, u32)]) -> Vec<Span> {
    v.iter()
        .map(|&(offset, length)| Span { offset, length })
        .collect()
}

fn ih(count: u64, zc: u64, sum: f64, pos: &[(i32, u32)], pb: &[i64]) -> Histogram {
    Histogram {
        schema: 0,
        zero_threshold: 2f64.powi(-128),
        count,
        zero_count: zc,
        sum,
        positive_spans: sp(pos),
        positive_buckets: pb.to_vec(),
        ..Default::default()
    }
}

fn append_all(c: &mut HistogramChunk, samples: &[(i64, Histogram)]) {
    for (t, h) in samples {
        assert!(matches!(c.append(None, *t, h), AppendOutcome::Appended));
    }
}

#[test]
fn integer_chunk_bytes_match_prometheus() {
    let mut c = HistogramChunk::new();
    append_all(
        &mut c,
        &[
            (1000, ih(5, 1, 18.4, &[(0, 2)], &[1, 2])),
            (2000, ih(8, 2, 30.0, &[(0, 2)], &[2, 2])),
            (3000, ih(12, 2, 45.5, &[(0, 2)], &[3, 3])),
        ],
    );
    let want: &[u8] = &[
        0, 3, 0, 116, 70, 71, 143, 162, 177, 64, 50, 102, 102, 102, 102, 102, 102, 140, 188, 125,
        19, 142, 204, 241, 153, 153, 153, 153, 153, 156, 72, 223, 73, 62, 52, 64,
    ];
    assert_eq!(c.bytes(), want);
    let got: Vec<_> = HistogramIter::new(want).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].1.positive_buckets, vec![3, 3]);
    assert_eq!(got[2].1.count, 12);
    assert_eq!(got[0].1.counter_reset_hint, CounterResetHint::Unknown);
    assert_eq!(
        got[1].1.counter_reset_hint,
        CounterResetHint::NotCounterReset
    );
}

#[test]
fn integer_chunk_negative_buckets_bytes_match_prometheus() {
    let h = |count, zc, sum, pb: i64, nb: i64| Histogram {
        schema: 3,
        zero_threshold: 0.0,
        count,
        zero_count: zc,
        sum,
        positive_spans: sp(&[(-2, 1)]),
        positive_buckets: vec![pb],
        negative_spans: sp(&[(5, 1)]),
        negative_buckets: vec![nb],
        ..Default::default()
    };
    let mut c = HistogramChunk::new();
    append_all(
        &mut c,
        &[
            (1_700_000_000_000, h(3, 0, -2.5, 1, 2)),
            (1_700_000_015_000, h(5, 0, -7.0, 2, 2)),
            (1_700_000_030_000, h(9, 1, -1.0, 3, 3)),
        ],
    );
    let want: &[u8] = &[
        0, 3, 0, 0, 156, 99, 104, 199, 11, 252, 0, 3, 23, 159, 202, 208, 1, 54, 0, 32, 0, 0, 0, 0,
        0, 4, 101, 240, 117, 49, 38, 176, 184, 146, 142, 19, 127, 246, 136,
    ];
    assert_eq!(c.bytes(), want);
}

#[test]
fn float_chunk_bytes_match_prometheus() {
    let fh = |count, zc, sum, pb: &[f64]| FloatHistogram {
        schema: 0,
        zero_threshold: 2f64.powi(-128),
        count,
        zero_count: zc,
        sum,
        positive_spans: sp(&[(0, 2)]),
        positive_buckets: pb.to_vec(),
        ..Default::default()
    };
    let mut c = FloatHistogramChunk::new();
    for (t, h) in [
        (1000, fh(5.0, 1.0, 18.4, &[1.0, 3.0])),
        (2000, fh(8.0, 2.0, 30.0, &[2.0, 4.0])),
        (3000, fh(12.0, 2.0, 45.5, &[3.0, 6.0])),
    ] {
        assert!(matches!(c.append(None, t, &h), AppendOutcome::Appended));
    }
    let want: &[u8] = &[
        0, 3, 0, 116, 70, 71, 143, 161, 0, 80, 0, 0, 0, 0, 0, 0, 255, 192, 0, 0, 0, 0, 0, 1, 0,
        201, 153, 153, 153, 153, 153, 152, 255, 192, 0, 0, 0, 0, 0, 1, 0, 32, 0, 0, 0, 0, 0, 3,
        199, 209, 168, 77, 194, 95, 255, 217, 158, 51, 51, 51, 51, 51, 51, 194, 95, 255, 214, 22,
        137, 164, 159, 30, 192, 114,
    ];
    assert_eq!(c.bytes(), want);
    let got: Vec<_> = FloatHistogramIter::new(want).collect();
    assert_eq!(got[2].1.positive_buckets, vec![3.0, 6.0]);
    assert_eq!(got[1].1.sum, 30.0);
}

#[test]
fn counter_reset_starts_chunk_with_reset_header() {
    let mut c = HistogramChunk::new();
    append_all(&mut c, &[(1, ih(10, 0, 1.0, &[(0, 1)], &[10]))]);
    // count went down
    let AppendOutcome::NewChunk(n) = c.append(None, 2, &ih(3, 0, 1.0, &[(0, 1)], &[3])) else {
        panic!("a counter reset must cut")
    };
    assert_eq!(n.counter_reset_header(), CounterResetHeader::CounterReset);
    assert_eq!(n.bytes()[2], 0b1000_0000);
    // one bucket went down while the count went up
    let AppendOutcome::NewChunk(n) = c.append(None, 2, &ih(12, 0, 1.0, &[(0, 2)], &[9, 3])) else {
        panic!("a bucket reset must cut")
    };
    assert_eq!(n.counter_reset_header(), CounterResetHeader::CounterReset);
    // schema change: unknown
    let mut h = ih(12, 0, 1.0, &[(0, 1)], &[12]);
    h.schema = 1;
    let AppendOutcome::NewChunk(n) = c.append(None, 2, &h) else {
        panic!("a schema change must cut")
    };
    assert_eq!(n.counter_reset_header(), CounterResetHeader::Unknown);
    // zero threshold change: unknown
    let mut h = ih(12, 0, 1.0, &[(0, 1)], &[12]);
    h.zero_threshold = 0.5;
    assert!(matches!(c.append(None, 2, &h), AppendOutcome::NewChunk(_)));
    // a chunk cut by the head after a chunk that this sample continues: "not a reset"
    let mut next = HistogramChunk::new();
    next.append(Some(&c), 2, &ih(12, 0, 1.0, &[(0, 1)], &[12]));
    assert_eq!(
        next.counter_reset_header(),
        CounterResetHeader::NotCounterReset
    );
    let mut next = HistogramChunk::new();
    next.append(Some(&c), 2, &ih(1, 0, 1.0, &[(0, 1)], &[1]));
    assert_eq!(
        next.counter_reset_header(),
        CounterResetHeader::CounterReset
    );
}

#[test]
fn new_buckets_recode_the_chunk() {
    let mut c = HistogramChunk::new();
    append_all(&mut c, &[(1, ih(3, 0, 1.0, &[(0, 2)], &[1, 1]))]);
    // a new bucket between and after: [0,1] -> [0,1,2,4]
    let h2 = ih(9, 0, 2.0, &[(0, 3), (1, 1)], &[1, 1, -2, 3]);
    assert!(matches!(c.append(None, 2, &h2), AppendOutcome::Recoded));
    let got: Vec<_> = HistogramIter::new(c.bytes()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1.positive_spans, sp(&[(0, 3), (1, 1)]));
    assert_eq!(
        got[0].1.to_float().positive_buckets,
        vec![1.0, 2.0, 0.0, 0.0]
    );
    assert_eq!(
        got[1].1.to_float().positive_buckets,
        vec![1.0, 2.0, 0.0, 3.0]
    );
    // the re-coded chunk is what appending both in the new layout from scratch gives
    let mut fresh = HistogramChunk::new();
    let h1 = ih(3, 0, 1.0, &[(0, 3), (1, 1)], &[1, 1, -2, 0]);
    append_all(&mut fresh, &[(1, h1), (2, h2)]);
    assert_eq!(c.bytes(), fresh.bytes());
    // a bucket that disappears while empty is kept (backward insert), no new chunk
    let h3 = ih(9, 0, 3.0, &[(0, 2), (2, 1)], &[1, 1, 1]);
    assert!(matches!(c.append(None, 3, &h3), AppendOutcome::Appended));
    let got: Vec<_> = HistogramIter::new(c.bytes()).collect();
    assert_eq!(
        got[2].1.to_float().positive_buckets,
        vec![1.0, 2.0, 0.0, 3.0]
    );
}

#[test]
fn gauge_histograms_expand_both_ways() {
    let g = |count, pos: &[(i32, u32)], pb: &[i64]| {
        let mut h = ih(count, 0, 1.0, pos, pb);
        h.counter_reset_hint = CounterResetHint::Gauge;
        h
    };
    let mut c = HistogramChunk::new();
    c.append(None, 1, &g(5, &[(0, 2)], &[2, 1]));
    assert_eq!(c.counter_reset_header(), CounterResetHeader::Gauge);
    // goes down and moves: still the same chunk, re-coded to the union of buckets
    assert!(matches!(
        c.append(None, 2, &g(2, &[(1, 2)], &[1, 0])),
        AppendOutcome::Recoded
    ));
    let got: Vec<_> = HistogramIter::new(c.bytes()).collect();
    assert_eq!(got[0].1.positive_spans, sp(&[(0, 3)]));
    assert_eq!(got[1].1.to_float().positive_buckets, vec![0.0, 1.0, 1.0]);
    assert!(got
        .iter()
        .all(|(_, h)| h.counter_reset_hint == CounterResetHint::Gauge));
    // a counter histogram after gauges: new chunk
    assert!(matches!(
        c.append(None, 3, &ih(2, 0, 1.0, &[(1, 2)], &[1, 0])),
        AppendOutcome::NewChunk(_)
    ));
}

#[test]
fn stale_markers_round_trip() {
    let stale = f64::from_bits(STALE_NAN_BITS);
    let mut c = HistogramChunk::new();
    append_all(
        &mut c,
        &[
            (1, ih(3, 0, 1.0, &[(0, 2)], &[1, 1])),
            (
                2,
                Histogram {
                    sum: stale,
                    ..Default::default()
                },
            ),
        ],
    );
    // after a stale marker only stale markers fit
    assert!(matches!(
        c.append(None, 3, &ih(3, 0, 1.0, &[(0, 2)], &[1, 1])),
        AppendOutcome::NewChunk(_)
    ));
    let got: Vec<_> = HistogramIter::new(c.bytes()).collect();
    assert_eq!(got[1].1.sum.to_bits(), STALE_NAN_BITS);
    assert!(got[1].1.positive_buckets.is_empty());
}

#[test]
fn corrupt_data_is_an_error_not_a_panic() {
    let mut c = HistogramChunk::new();
    append_all(&mut c, &[(1, ih(3, 0, 1.0, &[(0, 2)], &[1, 1]))]);
    let b = c.bytes();
    for cut in 0..b.len() {
        let mut it = HistogramIter::new(&b[..cut]);
        assert!(it.next().is_none());
        assert!(it.err().is_some(), "cut at {cut}");
    }
    let mut out = Vec::new();
    assert_eq!(
        decode_chunk_float(Encoding::Xor, b, &mut out),
        Err(DecodeError::NotHistogram(Encoding::Xor))
    );
}

fn arb_layout() -> impl Strategy<Value = Vec<Span>> {
    proptest::collection::vec((0i32..4, 1u32..4), 0..4).prop_map(|v| {
        v.into_iter()
            .map(|(offset, length)| Span { offset, length })
            .collect()
    })
}

fn arb_histograms() -> impl Strategy<Value = Vec<(i64, Histogram)>> {
    (
        arb_layout(),
        arb_layout(),
        -4i32..=8,
        proptest::collection::vec((1i64..100_000, 0u64..1000, any::<u64>()), 1..40),
    )
        .prop_map(|(pos, neg, schema, steps)| {
            let np = pos.iter().map(|s| s.length as usize).sum::<usize>();
            let nn = neg.iter().map(|s| s.length as usize).sum::<usize>();
            let mut t = 0i64;
            let mut out = Vec::new();
            let mut abs_p = vec![0i64; np];
            let mut abs_n = vec![0i64; nn];
            let mut zc = 0u64;
            for (dt, inc, seed) in steps {
                t += dt;
                for (j, b) in abs_p.iter_mut().chain(abs_n.iter_mut()).enumerate() {
                    *b += ((seed >> (j % 60)) & 7) as i64;
                }
                zc += inc % 3;
                let to_deltas = |a: &[i64]| {
                    let mut prev = 0;
                    a.iter()
                        .map(|x| {
                            let d = x - prev;
                            prev = *x;
                            d
                        })
                        .collect::<Vec<_>>()
                };
                let count = zc + abs_p.iter().chain(&abs_n).map(|x| *x as u64).sum::<u64>();
                out.push((
                    t,
                    Histogram {
                        counter_reset_hint: CounterResetHint::Unknown,
                        schema,
                        zero_threshold: 0.0,
                        zero_count: zc,
                        count,
                        sum: (seed % 10_000) as f64 / 7.0,
                        positive_spans: pos.clone(),
                        negative_spans: neg.clone(),
                        positive_buckets: to_deltas(&abs_p),
                        negative_buckets: to_deltas(&abs_n),
                        custom_values: Vec::new(),
                    },
                ));
            }
            out
        })
}

proptest! {
    #[test]
    fn integer_round_trip(samples in arb_histograms()) {
        let mut c = HistogramChunk::new();
        for (t, h) in &samples {
            prop_assert!(matches!(c.append(None, *t, h), AppendOutcome::Appended));
        }
        let got: Vec<_> = HistogramIter::new(c.bytes()).collect();
        prop_assert_eq!(got.len(), samples.len());
        for ((t, h), (gt, gh)) in samples.iter().zip(&got) {
            prop_assert_eq!(t, gt);
            prop_assert!(h.equals(gh), "{:?} != {:?}", h, gh);
        }
        // float decoding agrees with to_float
        let mut fl = Vec::new();
        decode_chunk_float(Encoding::Histogram, c.bytes(), &mut fl).unwrap();
        for ((_, h), (_, f)) in samples.iter().zip(&fl) {
            let mut want = h.to_float();
            want.counter_reset_hint = f.counter_reset_hint;
            prop_assert_eq!(&want, f);
        }
    }

    #[test]
    fn float_round_trip(samples in arb_histograms()) {
        let mut c = FloatHistogramChunk::new();
        let floats: Vec<_> = samples.iter().map(|(t, h)| (*t, h.to_float())).collect();
        for (t, h) in &floats {
            prop_assert!(matches!(c.append(None, *t, h), AppendOutcome::Appended));
        }
        let mut got = Vec::new();
        decode_chunk_float(Encoding::FloatHistogram, c.bytes(), &mut got).unwrap();
        prop_assert_eq!(got.len(), floats.len());
        for ((t, h), (gt, gh)) in floats.iter().zip(&got) {
            prop_assert_eq!(t, gt);
            prop_assert!(h.equals(gh), "{:?} != {:?}", h, gh);
        }
    }

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut out = Vec::new();
        let _ = decode_chunk_float(Encoding::Histogram, &data, &mut out);
        let _ = decode_chunk_float(Encoding::FloatHistogram, &data, &mut out);
    }
}

#[test]
fn rechunk_keeps_or_derives_the_header() {
    let mut c = HistogramChunk::new();
    let mut first = ih(1, 0, 1.0, &[(0, 1)], &[1]);
    first.counter_reset_hint = CounterResetHint::CounterReset;
    append_all(&mut c, &[(1, first)]);
    for t in 2..=5 {
        c.append(None, t, &ih(t as u64, 0, 1.0, &[(0, 1)], &[t]));
    }
    assert_eq!(c.counter_reset_header(), CounterResetHeader::CounterReset);
    let all = chunk::rechunk_in_range(Encoding::Histogram, c.bytes(), 0, 10);
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].0, all[0].1), (1, 5));
    assert_eq!(all[0].2, c.bytes());
    let tail = chunk::rechunk_in_range(Encoding::Histogram, c.bytes(), 3, 10);
    assert_eq!((tail[0].0, tail[0].1), (3, 5));
    assert_eq!(
        CounterResetHeader::of(&tail[0].2),
        CounterResetHeader::NotCounterReset
    );
    let head = chunk::rechunk_in_range(Encoding::Histogram, c.bytes(), 0, 3);
    assert_eq!((head[0].0, head[0].1), (1, 2));
    assert_eq!(
        CounterResetHeader::of(&head[0].2),
        CounterResetHeader::CounterReset
    );
    assert_eq!(HistogramIter::new(&head[0].2).count(), 2);
}
