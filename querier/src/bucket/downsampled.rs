//! Downsampled reads: the samples an aggregate chunk gives for the function that
//! reads it (Thanos's `aggrsFromFunc`), averages from sum and count, and joining
//! per-block pieces with counter resets applied.

use strata_tsdb::chunkenc::XorIter;
use strata_tsdb::downsample::{AggrChunk, AggrType, CounterSeries};
use strata_tsdb::labels::Labels;

use super::SeriesData;

/// The aggregate(s) of a downsampled chunk a function reads (Thanos's `aggrsFromFunc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggr {
    Min,
    Max,
    Count,
    Sum,
    Counter,
    /// sum / count per window.
    Average,
}

impl Aggr {
    pub fn for_func(func: Option<&str>) -> Aggr {
        let f = func.unwrap_or("");
        if f == "min" || f.starts_with("min_") {
            Aggr::Min
        } else if f == "max" || f.starts_with("max_") {
            Aggr::Max
        } else if f == "count" || f.starts_with("count_") {
            Aggr::Count
        } else if f.starts_with("sum_") {
            Aggr::Sum
        } else if matches!(f, "rate" | "increase" | "irate" | "resets") {
            Aggr::Counter
        } else {
            Aggr::Average
        }
    }
}

/// Append the samples of aggregate chunk `data` in `[mint, maxt]` as `aggr` reads them.
/// Counter samples are appended as stored (reset adjustment happens over the whole
/// series, see [`join_pieces`]).
pub(super) fn aggr_samples(
    data: &[u8],
    aggr: Aggr,
    res: i64,
    continues: bool,
    mint: i64,
    maxt: i64,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), String> {
    let c = AggrChunk::new(data).map_err(|e| e.to_string())?;
    // A chunk's last window is stamped with its last raw sample's time, every other
    // window with the window's end: stamp them all with the window's end. And a counter
    // sub-chunk starts with the chunk's first raw sample: after the series' first
    // chunk it is left out (the next window's value, relative to it, carries its
    // increase; a reset is still seen against the previous chunk's last raw value).
    // Either would make a rate over a window at a chunk boundary see more increase than
    // its time span (+1.8% for a 1h rate over 5m data from 1m samples).
    // `continues`: the block answers after an earlier piece of the query's range.
    let first_counter = out.is_empty() && !continues;
    let keep = |t: i64| t >= mint && t <= maxt;
    let bad = |t: AggrType, e: &str| format!("aggregate chunk: {t:?}: {e}");
    match aggr {
        Aggr::Min | Aggr::Max | Aggr::Count | Aggr::Sum | Aggr::Counter => {
            let t = match aggr {
                Aggr::Min => AggrType::Min,
                Aggr::Max => AggrType::Max,
                Aggr::Count => AggrType::Count,
                Aggr::Sum => AggrType::Sum,
                _ => AggrType::Counter,
            };
            let Some(d) = c.get(t) else { return Ok(()) };
            let mut it = XorIter::new(d);
            out.reserve(it.num_samples());
            let mut stamp = WindowStamp::new(res);
            let mut first = true;
            for (ts, v) in it.by_ref() {
                let ts = if t == AggrType::Counter && first {
                    first = false;
                    if !first_counter {
                        continue;
                    }
                    // The series' first counter sample keeps its raw timestamp.
                    ts
                } else {
                    stamp.end(ts)
                };
                if keep(ts) {
                    out.push((ts, v));
                }
            }
            if let Some(e) = it.err() {
                return Err(bad(t, e));
            }
        }
        Aggr::Average => {
            let (Some(sd), cd) = (c.get(AggrType::Sum), c.get(AggrType::Count)) else {
                if let Some(cd) = c.get(AggrType::Count) {
                    let mut ci = XorIter::new(cd);
                    ci.by_ref().for_each(drop);
                    if let Some(e) = ci.err() {
                        return Err(bad(AggrType::Count, e));
                    }
                }
                return Ok(());
            };
            let Some(cd) = cd else {
                // No count: no window can be averaged; still check the sum decodes.
                let mut si = XorIter::new(sd);
                si.by_ref().for_each(drop);
                return si.err().map_or(Ok(()), |e| Err(bad(AggrType::Sum, e)));
            };
            let at = out.len();
            if !average_lockstep(sd, cd, res, &keep, out).map_err(|(t, e)| bad(t, &e))? {
                // Sum and count disagree on their windows (not written by a Thanos-style
                // downsampler): match them up by time instead.
                out.truncate(at);
                average_merge(sd, cd, res, &keep, out).map_err(|(t, e)| bad(t, &e))?;
            }
        }
    }
    Ok(())
}

/// A decoding error of one sub-chunk.
type SubErr = (AggrType, String);

/// Averages of a chunk whose sum and count sub-chunks hold the same windows (Thanos
/// writes every aggregate for every window): both decoded side by side, one stamp.
/// `Ok(false)` as soon as their timestamps differ.
fn average_lockstep(
    sd: &[u8],
    cd: &[u8],
    res: i64,
    keep: &impl Fn(i64) -> bool,
    out: &mut Vec<(i64, f64)>,
) -> Result<bool, SubErr> {
    let (mut si, mut ci) = (XorIter::new(sd), XorIter::new(cd));
    out.reserve(si.num_samples());
    let mut stamp = WindowStamp::new(res);
    let same = loop {
        match (si.next(), ci.next()) {
            (Some((ts, s)), Some((tc, cv))) if ts == tc => {
                let t = stamp.end(ts);
                if cv > 0.0 && keep(t) {
                    out.push((t, s / cv));
                }
            }
            (None, None) => break true,
            _ => break false,
        }
    };
    if let Some(e) = si.err() {
        return Err((AggrType::Sum, e.to_string()));
    }
    if let Some(e) = ci.err() {
        return Err((AggrType::Count, e.to_string()));
    }
    Ok(same)
}

/// Averages of a chunk whose sum and count windows may differ: a window without both
/// is left out.
fn average_merge(
    sd: &[u8],
    cd: &[u8],
    res: i64,
    keep: &impl Fn(i64) -> bool,
    out: &mut Vec<(i64, f64)>,
) -> Result<(), SubErr> {
    let (mut si, mut ci) = (XorIter::new(sd), XorIter::new(cd));
    let (mut ss, mut cs) = (WindowStamp::new(res), WindowStamp::new(res));
    let mut cur: Option<(i64, f64)> = None;
    let mut count_done = false;
    for (t, s) in si.by_ref() {
        let t = ss.end(t);
        while !count_done && cur.is_none_or(|c| c.0 < t) {
            match ci.next() {
                Some((ct, cv)) => cur = Some((cs.end(ct), cv)),
                None => {
                    count_done = true;
                    cur = None;
                }
            }
        }
        if let Some((ct, cv)) = cur {
            if ct == t && cv > 0.0 && keep(t) {
                out.push((t, s / cv));
            }
        }
    }
    if let Some(e) = si.err() {
        return Err((AggrType::Sum, e.to_string()));
    }
    ci.by_ref().for_each(drop);
    if let Some(e) = ci.err() {
        return Err((AggrType::Count, e.to_string()));
    }
    Ok(())
}

/// Stamps a sample with the end of its `res`-wide window (`t - t % res + res - 1`;
/// unchanged when `res` is 0), without a division while samples fall in consecutive
/// windows.
struct WindowStamp {
    res: i64,
    /// The last window end handed out (`None`: none yet).
    last: Option<i64>,
}

impl WindowStamp {
    fn new(res: i64) -> Self {
        WindowStamp { res, last: None }
    }

    #[inline]
    fn end(&mut self, t: i64) -> i64 {
        if self.res <= 0 {
            return t;
        }
        if let Some(pe) = self.last {
            if t == pe {
                return pe;
            }
            if let Some(next) = pe.checked_add(self.res) {
                if t > pe && t <= next {
                    self.last = Some(next);
                    return next;
                }
            }
        }
        let e = t - t.rem_euclid(self.res) + self.res - 1;
        self.last = Some(e);
        e
    }
}

/// Join per-block pieces (each starting at the `i64`, pieces of one stream disjoint in
/// time) into one sample list per series. For counters the joined list is made
/// monotonic (Thanos's `ApplyCounterResetsSeriesIterator`: a drop is a reset; a repeated
/// timestamp carries a chunk's last raw value) and then shifted so it ends at the last
/// raw value, so it lines up with raw samples that follow it from other sources.
pub(super) fn join_pieces(
    mut pieces: Vec<(i64, Vec<SeriesData>)>,
    counter: bool,
) -> Vec<SeriesData> {
    pieces.sort_by_key(|p| p.0);
    let mut by_series: std::collections::BTreeMap<Labels, Vec<(i64, f64)>> = Default::default();
    for (_, part) in pieces {
        for (l, s) in part {
            let e = by_series.entry(l).or_default();
            let last = e.last().map(|p| p.0);
            match last {
                // Overlapping blocks of one resolution: keep time order.
                Some(lt) => {
                    if s.first().is_some_and(|p| p.0 > lt) {
                        e.extend_from_slice(&s);
                    } else {
                        e.extend(s.into_iter().filter(|p| p.0 > lt));
                    }
                }
                None => *e = s,
            }
        }
    }
    by_series
        .into_iter()
        .map(|(l, s)| {
            if !counter {
                let mut s = s;
                s.dedup_by_key(|p| p.0);
                return (l, s);
            }
            let last_raw = s.iter().rev().find(|p| !p.1.is_nan()).map(|p| p.1);
            let mut cs = CounterSeries::default();
            cs.push_chunk(&s);
            let mut out = cs.out;
            if let (Some(raw), Some(&(_, adj))) = (last_raw, out.last()) {
                let shift = raw - adj;
                if shift != 0.0 {
                    for p in &mut out {
                        p.1 += shift;
                    }
                }
            }
            (l, out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tsdb::downsample::RES_5M;

    #[test]
    fn aggregate_per_function() {
        assert_eq!(Aggr::for_func(Some("rate")), Aggr::Counter);
        assert_eq!(Aggr::for_func(Some("increase")), Aggr::Counter);
        assert_eq!(Aggr::for_func(Some("max_over_time")), Aggr::Max);
        assert_eq!(Aggr::for_func(Some("min_over_time")), Aggr::Min);
        assert_eq!(Aggr::for_func(Some("sum_over_time")), Aggr::Sum);
        assert_eq!(Aggr::for_func(Some("count_over_time")), Aggr::Count);
        assert_eq!(Aggr::for_func(Some("avg_over_time")), Aggr::Average);
        assert_eq!(Aggr::for_func(None), Aggr::Average);
    }

    /// Averages come from sum / count per window: side by side when both sub-chunks
    /// hold the same windows, matched by time when they do not (a window missing from
    /// either is left out); a zero count gives no point.
    #[test]
    fn averages_from_sum_and_count() {
        use strata_tsdb::chunkenc::XorChunk;
        use strata_tsdb::downsample::encode_aggr;
        let chunk = |pts: &[(i64, f64)]| {
            let mut c = XorChunk::new();
            for &(t, v) in pts {
                c.append(t, v);
            }
            c
        };
        let r = RES_5M;
        let avg = |sum: &[(i64, f64)], count: &[(i64, f64)]| {
            let (s, c) = (chunk(sum), chunk(count));
            let data = encode_aggr([Some(&c), Some(&s), None, None, None]);
            let mut out = Vec::new();
            aggr_samples(&data, Aggr::Average, r, false, 0, i64::MAX, &mut out).unwrap();
            out
        };
        // Same windows (stamped at the raw samples' times, read at the windows' ends).
        let sum = [(r - 10, 10.0), (2 * r - 10, 30.0), (3 * r - 10, 8.0)];
        let count = [(r - 10, 2.0), (2 * r - 10, 3.0), (3 * r - 10, 0.0)];
        assert_eq!(avg(&sum, &count), [(r - 1, 5.0), (2 * r - 1, 10.0)]);
        // The count lacks the second window: that window has no average.
        let count = [(r - 10, 2.0), (3 * r - 10, 4.0)];
        assert_eq!(avg(&sum, &count), [(r - 1, 5.0), (3 * r - 1, 2.0)]);
        // No count at all: nothing.
        let s = chunk(&sum);
        let data = encode_aggr([None, Some(&s), None, None, None]);
        let mut out = Vec::new();
        aggr_samples(&data, Aggr::Average, r, false, 0, i64::MAX, &mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn counter_pieces_join_across_blocks_and_resets() {
        use strata_tsdb::downsample::downsample_raw;
        // 1m samples for 4h, reset at 2h30; two 2h 5m-blocks.
        let raw: Vec<(i64, f64)> = (0..240)
            .map(|i| {
                (
                    i * 60_000,
                    if i < 150 { i as f64 } else { (i - 150) as f64 },
                )
            })
            .collect();
        let l = Labels::from_pairs([("__name__", "c")]);
        let mut pieces = Vec::new();
        for (lo, hi, continues) in [
            (0, 2 * 3_600_000 - 1, false),
            (2 * 3_600_000, 4 * 3_600_000 - 1, true),
        ] {
            let part: Vec<(i64, f64)> = raw
                .iter()
                .copied()
                .filter(|p| p.0 >= lo && p.0 <= hi)
                .collect();
            let mut s = Vec::new();
            for c in downsample_raw(&part, RES_5M) {
                aggr_samples(&c.data, Aggr::Counter, RES_5M, continues, lo, hi, &mut s).unwrap();
            }
            pieces.push((lo, vec![(l.clone(), s)]));
        }
        let joined = join_pieces(pieces, true);
        let s = &joined[0].1;
        assert!(
            s.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{s:?}"
        );
        // Total increase 149 + 89, and the series ends at the last raw value.
        assert_eq!(s.last().unwrap().1 - s[0].1, 238.0);
        assert_eq!(s.last().unwrap().1, 89.0);
        // Uniform window stamps after the first sample.
        assert!(s[1..].iter().all(|p| (p.0 + 1) % RES_5M == 0), "{s:?}");
    }
}
