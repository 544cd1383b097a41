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

/// Penalty applied before a sample interval is known, in ms (Thanos's `initialPenalty`).
pub const INITIAL_PENALTY_MS: i64 = 5000;

/// Merge two replicas of one series (each sorted by time) with the penalty algorithm.
pub fn merge_pair(a: &[(i64, f64)], b: &[(i64, f64)], counter: bool) -> Vec<(i64, f64)> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut ia, mut ib) = (0usize, 0usize);
    let (mut a_live, mut b_live) = (!a.is_empty(), !b.is_empty());
    let mut last_t: Option<i64> = None;
    let (mut pen_a, mut pen_b) = (0i64, 0i64);
    let mut use_a = true;
    // Spacing of the last two emitted samples.
    let mut interval = INITIAL_PENALTY_MS;
    // Counter correction per replica, added to its raw values.
    let (mut adj_a, mut adj_b) = (0.0f64, 0.0f64);

    let seek = |s: &[(i64, f64)], i: &mut usize, t: i64| {
        while *i < s.len() && s[*i].0 < t {
            *i += 1;
        }
        *i < s.len()
    };

    loop {
        let prev_use_a = use_a;
        let last_v = out.last().map(|&(_, v)| v);
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
        if counter && use_a != prev_use_a {
            if let Some(last) = last_v {
                if a_live && last > a[ia].1 + adj_a {
                    adj_a += last - (a[ia].1 + adj_a);
                }
                if b_live && last > b[ib].1 + adj_b {
                    adj_b += last - (b[ib].1 + adj_b);
                }
            }
        }
        let (t, v) = if use_a {
            (a[ia].0, a[ia].1 + adj_a)
        } else {
            (b[ib].0, b[ib].1 + adj_b)
        };
        if let Some(l) = last_t {
            interval = (t - l).max(1);
        }
        last_t = Some(t);
        out.push((t, v));
    }
    out
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
