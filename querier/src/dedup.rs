//! HA replica deduplication: series that are equal once the replica labels
//! (`--query.replica-label`, `replicaLabels[]`) are removed are merged into one with
//! Thanos's penalty algorithm (`pkg/dedup/iter.go`):
//!
//! * take the earliest sample of either replica; the replica that was not picked gets a
//!   penalty of twice the last sample interval (5 s before one is known), so its next
//!   sample must lie beyond `last + 1 + penalty` to be considered;
//! * so the merge stays on one replica while it has samples, and switches to the other
//!   only across a gap, never emitting samples of both replicas for the same scrape;
//! * for counter functions (`rate`, `increase`, `irate`, `resets`) a replica switched to
//!   whose value is below the last emitted one is shifted up, so the switch does not look
//!   like a counter reset.
//!
//! More than two replicas are merged pairwise, left to right, as Thanos chains its
//! iterators.

use std::collections::BTreeMap;

use strata_tsdb::labels::Labels;

pub use strata_tsdb::dedup::{merge_pair, INITIAL_PENALTY_MS};

/// Functions whose argument is treated as a counter when switching replicas.
pub fn is_counter_func(f: Option<&str>) -> bool {
    matches!(f, Some("increase" | "rate" | "irate" | "resets"))
}

/// Group `series` (sorted by labels) by their labels without `replica_labels` and merge
/// each group's replicas; the result is sorted by the reduced labels.
pub fn dedup(
    series: impl IntoIterator<Item = (Labels, Vec<(i64, f64)>)>,
    replica_labels: &[String],
    counter: bool,
) -> Vec<(Labels, Vec<(i64, f64)>)> {
    let names: Vec<&str> = replica_labels.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    for (labels, samples) in series {
        let key = labels.without(&names);
        match groups.get_mut(&key) {
            None => {
                groups.insert(key, samples);
            }
            Some(acc) => *acc = merge_pair(acc, &samples, counter),
        }
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scrape(from_s: i64, to_s: i64, every_s: i64, offset_ms: i64) -> Vec<(i64, f64)> {
        (from_s..to_s)
            .step_by(every_s as usize)
            .map(|s| (s * 1000 + offset_ms, s as f64))
            .collect()
    }

    fn gaps(s: &[(i64, f64)]) -> (i64, i64) {
        let d: Vec<i64> = s.windows(2).map(|w| w[1].0 - w[0].0).collect();
        (*d.iter().min().unwrap(), *d.iter().max().unwrap())
    }

    #[test]
    fn replicas_with_different_gaps_fill_each_other() {
        // A: every 15s over [0, 600s) except (200s, 400s); B: offset 5s, missing
        // (400s, 500s).
        let a: Vec<_> = scrape(0, 600, 15, 0)
            .into_iter()
            .filter(|(t, _)| !(200_000..400_000).contains(t))
            .collect();
        let b: Vec<_> = scrape(0, 600, 15, 5000)
            .into_iter()
            .filter(|(t, _)| !(400_000..500_000).contains(t))
            .collect();
        let out = merge_pair(&a, &b, false);
        // strictly increasing: no doubles
        assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "{out:?}");
        let (min, max) = gaps(&out);
        // one sample per scrape: never two samples of one scrape from both replicas
        assert!(
            min >= 10_000,
            "doubled samples: min interval {min}ms in {out:?}"
        );
        // the gaps of either replica are filled: at most a switch-over (penalty) apart
        assert!(max <= 45_000, "gap of {max}ms in {out:?}");
        assert!(out.first().unwrap().0 == 0 && out.last().unwrap().0 >= 585_000);
        // about one stream's worth of samples, not two
        assert!(out.len() <= 42, "{} samples", out.len());
        // every emitted sample is a real sample of one of the replicas
        assert!(out.iter().all(|s| a.contains(s) || b.contains(s)));
    }

    #[test]
    fn stays_on_first_replica_while_it_has_data() {
        let a = scrape(0, 300, 15, 0);
        let b = scrape(0, 300, 15, 1000);
        assert_eq!(merge_pair(&a, &b, false), a);
        // B starts earlier: it is picked and kept.
        let b = scrape(0, 300, 15, 0);
        let a2 = scrape(0, 300, 15, 3000);
        assert_eq!(merge_pair(&a2, &b, false), b);
    }

    #[test]
    fn one_side_empty() {
        let a = scrape(0, 60, 15, 0);
        assert_eq!(merge_pair(&a, &[], false), a);
        assert_eq!(merge_pair(&[], &a, false), a);
        assert!(merge_pair(&[], &[], false).is_empty());
    }

    #[test]
    fn counter_switch_does_not_reset() {
        // A: counter 10..; stops at 60s. B lags by 100 (restarted replica), continues.
        let a: Vec<_> = (0..5).map(|i| (i * 15_000, 100.0 + i as f64)).collect();
        let b: Vec<_> = (0..10).map(|i| (i * 15_000 + 2000, i as f64)).collect();
        let out = merge_pair(&a, &b, true);
        assert!(out.windows(2).all(|w| w[1].1 >= w[0].1), "{out:?}");
        let plain = merge_pair(&a, &b, false);
        assert!(plain.windows(2).any(|w| w[1].1 < w[0].1));
    }

    #[test]
    fn groups_by_labels_without_replica() {
        let l = |r: &str| Labels::from_pairs([("__name__", "up"), ("job", "x"), ("replica", r)]);
        let other = Labels::from_pairs([("__name__", "up"), ("job", "y"), ("replica", "a")]);
        let a = scrape(0, 120, 15, 0);
        let b = scrape(0, 120, 15, 2000);
        let out = dedup(
            vec![(l("a"), a.clone()), (l("b"), b), (other, a.clone())],
            &["replica".to_string()],
            false,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0].0,
            Labels::from_pairs([("__name__", "up"), ("job", "x")])
        );
        assert_eq!(out[0].1, a);
        assert_eq!(
            out[1].0,
            Labels::from_pairs([("__name__", "up"), ("job", "y")])
        );
    }
}
