//! The sample-level HA replica merge Thanos calls the penalty algorithm
//! (`pkg/dedup/iter.go`), shared by the querier (query-time dedup) and the compactor
//! (offline dedup of an HA pair's blocks):
//!
//! * take the earliest sample of either replica; the replica that was not picked gets a
//!   penalty of twice the last sample interval (5 s before one is known), so its next
//!   sample must lie beyond `last + 1 + penalty` to be considered;
//! * so the merge stays on one replica while it has samples, and switches to the other
//!   only across a gap, never emitting samples of both replicas for the same scrape;
//! * unlike Thanos, at a switch the replica switched to is read from half a sample
//!   interval after the last emitted sample, not from beyond the penalty: Thanos drops the
//!   one or two samples right after a gap, which leaves a hole where the other replica
//!   had data (and can shift a `rate` window's first sample);
//! * with `counter`, a replica switched to whose value is below the last emitted one is
//!   shifted up, so the switch does not look like a counter reset.
//!
//! [`merge_pair_samples`] runs the same picks over samples of any kind (native
//! histograms, series mixing them with floats), and [`decode_samples`] /
//! [`merge_by_time`] / [`cut_samples`] turn a series' chunks of any encoding into samples
//! and back, so chunks that overlap can be merged whatever their encoding.

use crate::chunkenc::{EncodedChunk, Encoding, XorIter};
use crate::histogram::{DecodeError, FloatHistogram, FloatHistogramIter, Histogram, HistogramIter};

/// Penalty applied before a sample interval is known, in ms (Thanos's `initialPenalty`).
pub const INITIAL_PENALTY_MS: i64 = 5000;

/// Merge two replicas of one series (each sorted by time) with the penalty algorithm.
pub fn merge_pair(a: &[(i64, f64)], b: &[(i64, f64)], counter: bool) -> Vec<(i64, f64)> {
    let mut out: Vec<(i64, f64)> = Vec::with_capacity(a.len().max(b.len()));
    // Counter correction per replica, added to its raw values.
    let (mut adj_a, mut adj_b) = (0.0f64, 0.0f64);
    penalty_picks(a, b, |p| {
        if counter && p.switched {
            if let Some(&(_, last)) = out.last() {
                if p.a_live && last > a[p.ia].1 + adj_a {
                    adj_a += last - (a[p.ia].1 + adj_a);
                }
                if p.b_live && last > b[p.ib].1 + adj_b {
                    adj_b += last - (b[p.ib].1 + adj_b);
                }
            }
        }
        out.push(if p.use_a {
            (a[p.ia].0, a[p.ia].1 + adj_a)
        } else {
            (b[p.ib].0, b[p.ib].1 + adj_b)
        });
    });
    out
}

/// [`merge_pair`] for samples of any kind (histograms, or a series mixing floats and
/// histograms): the same picks, values copied unchanged (no counter correction).
pub fn merge_pair_samples<T: Clone>(a: &[(i64, T)], b: &[(i64, T)]) -> Vec<(i64, T)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    penalty_picks(a, b, |p| {
        out.push(if p.use_a {
            a[p.ia].clone()
        } else {
            b[p.ib].clone()
        })
    });
    out
}

/// One emitted sample of the penalty merge: from `a` (at `ia`) or `b` (at `ib`);
/// `switched` when the replica differs from the previous pick's.
struct Pick {
    use_a: bool,
    switched: bool,
    ia: usize,
    ib: usize,
    a_live: bool,
    b_live: bool,
}

/// The penalty algorithm on timestamps: calls `emit` for every sample to output, in
/// time order.
fn penalty_picks<T>(a: &[(i64, T)], b: &[(i64, T)], mut emit: impl FnMut(Pick)) {
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut a_live, mut b_live) = (!a.is_empty(), !b.is_empty());
    let mut last_t: Option<i64> = None;
    let (mut pen_a, mut pen_b) = (0i64, 0i64);
    let mut use_a = true;
    // Spacing of the last two emitted samples.
    let mut interval = INITIAL_PENALTY_MS;

    fn seek<T>(s: &[(i64, T)], i: &mut usize, t: i64) -> bool {
        while *i < s.len() && s[*i].0 < t {
            *i += 1;
        }
        *i < s.len()
    }

    loop {
        let prev_use_a = use_a;
        let from = last_t.map_or(i64::MIN, |l| l.saturating_add(1));
        if a_live {
            a_live = seek(a, &mut ia, from.saturating_add(pen_a));
        }
        if b_live {
            b_live = seek(b, &mut ib, from.saturating_add(pen_b));
        }
        match (a_live, b_live) {
            (false, false) => break,
            (false, true) => {
                use_a = false;
                pen_b = 0;
            }
            (true, false) => {
                use_a = true;
                pen_a = 0;
            }
            (true, true) => {
                let (ta, tb) = (a[ia].0, b[ib].0);
                use_a = ta <= tb;
                let t = ta.min(tb);
                let pen = last_t.map_or(INITIAL_PENALTY_MS, |l| 2 * (t - l));
                if use_a {
                    pen_b = pen;
                    pen_a = 0;
                } else {
                    pen_a = pen;
                    pen_b = 0;
                }
            }
        }
        if let Some(l) = last_t {
            if use_a != prev_use_a {
                // Switching across a gap: take the new replica's samples from half an
                // interval after the last one emitted, so none right after the gap is lost.
                let from = l.saturating_add(1).saturating_add(interval / 2);
                if use_a {
                    ia = ia.min(a.partition_point(|s| s.0 < from));
                } else {
                    ib = ib.min(b.partition_point(|s| s.0 < from));
                }
            }
        }
        let t = if use_a { a[ia].0 } else { b[ib].0 };
        emit(Pick {
            use_a,
            switched: use_a != prev_use_a,
            ia,
            ib,
            a_live,
            b_live,
        });
        if let Some(l) = last_t {
            interval = (t - l).max(1);
        }
        last_t = Some(t);
    }
}

/// A sample of any kind, as a series mixing floats and native histograms holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    Float(f64),
    Histogram(Histogram),
    FloatHistogram(FloatHistogram),
}

/// Every sample of a series' chunks (XOR, histogram or float histogram) in chunk order.
pub fn decode_samples(chunks: &[EncodedChunk]) -> Result<Vec<(i64, Sample)>, DecodeError> {
    let mut out = Vec::new();
    for c in chunks {
        match c.encoding {
            Encoding::Xor => {
                let mut it = XorIter::new(&c.data);
                out.extend(it.by_ref().map(|(t, v)| (t, Sample::Float(v))));
                if it.err().is_some() {
                    return Err(DecodeError::Invalid("XOR chunk data ends early"));
                }
            }
            Encoding::Histogram => {
                let mut it = HistogramIter::new(&c.data);
                out.extend(it.by_ref().map(|(t, h)| (t, Sample::Histogram(h))));
                if let Some(e) = it.err() {
                    return Err(e.clone());
                }
            }
            Encoding::FloatHistogram => {
                let mut it = FloatHistogramIter::new(&c.data);
                out.extend(it.by_ref().map(|(t, h)| (t, Sample::FloatHistogram(h))));
                if let Some(e) = it.err() {
                    return Err(e.clone());
                }
            }
            e => return Err(DecodeError::NotHistogram(e)),
        }
    }
    Ok(out)
}

/// Merge sorted runs of one replica by timestamp; on equal timestamps the earlier run
/// wins.
pub fn merge_by_time<T>(runs: Vec<Vec<(i64, T)>>) -> Vec<(i64, T)> {
    let mut all: Vec<(usize, i64, T)> = runs
        .into_iter()
        .enumerate()
        .flat_map(|(i, r)| r.into_iter().map(move |(t, v)| (i, t, v)))
        .collect();
    all.sort_by_key(|s| (s.1, s.0));
    all.dedup_by_key(|s| s.1);
    all.into_iter().map(|(_, t, v)| (t, v)).collect()
}

/// Cut samples of any kind (sorted, unique timestamps) into chunks with the head's
/// rules: XOR chunks for floats, histogram chunks (re-coded, cut on counter resets and
/// layout changes) for histograms; `chunk_range` bounds every chunk.
pub fn cut_samples(samples: &[(i64, Sample)], chunk_range: i64) -> Vec<EncodedChunk> {
    crate::head::cut_chunks(samples, chunk_range)
}

#[cfg(test)]
mod switch_tests {
    use super::merge_pair;

    #[test]
    fn gaps_in_either_replica_are_filled_completely() {
        let full: Vec<(i64, f64)> = (0..200).map(|i| (i * 15_000, i as f64)).collect();
        let a: Vec<_> = full
            .iter()
            .copied()
            .filter(|(t, _)| !(300_000..600_000).contains(t))
            .collect();
        let b: Vec<_> = full
            .iter()
            .copied()
            .filter(|(t, _)| !(1_200_000..1_800_000).contains(t))
            .collect();
        assert_eq!(merge_pair(&a, &b, false), full);
        assert_eq!(merge_pair(&b, &a, true), full);
    }

    #[test]
    fn phase_shifted_replicas_never_double() {
        let a: Vec<(i64, f64)> = (0..100)
            .filter(|i| !(20..30).contains(i))
            .map(|i| (i * 15_000, i as f64))
            .collect();
        let b: Vec<(i64, f64)> = (0..100).map(|i| (i * 15_000 + 4_000, i as f64)).collect();
        let m = merge_pair(&a, &b, false);
        assert!(
            m.windows(2).all(|w| w[1].0 - w[0].0 >= 7_500),
            "samples closer than half an interval"
        );
        assert!(
            m.windows(2).all(|w| w[1].0 - w[0].0 <= 22_500),
            "a hole where b had data"
        );
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;
    use crate::head::{Head, HeadOptions};
    use crate::histogram::Span;
    use crate::labels::Labels;

    fn hist(i: u64) -> Histogram {
        Histogram {
            count: 2 * i,
            zero_count: i,
            sum: i as f64,
            positive_spans: vec![Span {
                offset: 0,
                length: 1,
            }],
            positive_buckets: vec![i as i64],
            ..Default::default()
        }
    }

    #[test]
    fn histogram_replicas_with_gaps_merge_completely() {
        let full: Vec<(i64, Sample)> = (0..200)
            .map(|i| (i * 15_000, Sample::Histogram(hist(i as u64))))
            .collect();
        let a: Vec<_> = full
            .iter()
            .filter(|(t, _)| !(300_000..600_000).contains(t))
            .cloned()
            .collect();
        let b: Vec<_> = full
            .iter()
            .filter(|(t, _)| !(1_200_000..1_800_000).contains(t))
            .cloned()
            .collect();
        assert_eq!(merge_pair_samples(&a, &b), full);
        // same picks as the float merge
        let fa: Vec<(i64, f64)> = a.iter().map(|(t, _)| (*t, *t as f64)).collect();
        let fb: Vec<(i64, f64)> = b.iter().map(|(t, _)| (*t, *t as f64)).collect();
        let ts: Vec<i64> = merge_pair(&fa, &fb, false).iter().map(|s| s.0).collect();
        let hs: Vec<i64> = merge_pair_samples(&a, &b).iter().map(|s| s.0).collect();
        assert_eq!(ts, hs);
    }

    #[test]
    fn overlapping_mixed_chunks_merge_and_recut() {
        // two heads with overlapping data: floats, then integer histograms, then float
        // histograms; the second has a sample the first lacks and a different value at a
        // shared timestamp (the earlier run wins)
        let mk = |skip: i64, bump: u64| {
            let h = Head::new(HeadOptions::default());
            let (r, _) = h.get_or_create(&Labels::from_pairs([("__name__", "x")]));
            for i in 0..300i64 {
                if i == skip {
                    continue;
                }
                let t = i * 15_000;
                match i {
                    0..=99 => h.append(r, t, i as f64 + bump as f64).unwrap(),
                    100..=199 => h.append_histogram(r, t, &hist(i as u64 + bump)).unwrap(),
                    _ => h
                        .append_float_histogram(r, t, &hist(i as u64 + bump).to_float())
                        .unwrap(),
                }
            }
            h.select(&[], i64::MIN, i64::MAX)
                .unwrap()
                .remove(0)
                .chunks
                .iter()
                .map(crate::head::HeadChunk::to_encoded)
                .collect::<Vec<_>>()
        };
        let first = mk(150, 0);
        let second = mk(-1, 1000);
        let runs = vec![
            decode_samples(&first).unwrap(),
            decode_samples(&second).unwrap(),
        ];
        let merged = merge_by_time(runs);
        assert_eq!(merged.len(), 300);
        // the gap at 150 came from the second run, everything else from the first
        let is = |s: &Sample, want: Histogram| matches!(s, Sample::Histogram(h) if h.equals(&want));
        assert!(is(&merged[150].1, hist(1150)), "{:?}", merged[150]);
        assert!(is(&merged[149].1, hist(149)), "{:?}", merged[149]);
        assert_eq!(merged[5].1, Sample::Float(5.0));
        let chunks = cut_samples(&merged, 2 * 3_600_000);
        let encs: Vec<Encoding> = chunks.iter().map(|c| c.encoding).collect();
        assert!(encs.contains(&Encoding::Xor));
        assert!(encs.contains(&Encoding::Histogram));
        assert!(encs.contains(&Encoding::FloatHistogram));
        // 1150 at 150 then 151 at 151: a counter reset, so a chunk starts there with the
        // reset header
        assert!(chunks.iter().any(|c| c.min_time == 151 * 15_000
            && crate::histogram::CounterResetHeader::of(&c.data)
                == crate::histogram::CounterResetHeader::CounterReset));
        let back = decode_samples(&chunks).unwrap();
        assert_eq!(back.len(), 300);
        for ((t1, s1), (t2, s2)) in back.iter().zip(&merged) {
            assert_eq!(t1, t2);
            match (s1, s2) {
                (Sample::Histogram(a), Sample::Histogram(b)) => assert!(a.equals(b)),
                (Sample::FloatHistogram(a), Sample::FloatHistogram(b)) => assert!(a.equals(b)),
                (a, b) => assert_eq!(a, b),
            }
        }
    }
}
