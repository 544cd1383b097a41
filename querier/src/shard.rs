//! Query sharding's series side: Mimir's `__query_shard__="i_of_n"` matcher. A
//! selector carrying it selects only the series whose label hash modulo `n` is `i - 1`,
//! so the `n` shards of one selector split its series between them without overlap.
//! The frontend (`strata-frontend`'s `shard`) writes the matcher into the sub-queries
//! it sends; the fan-out ([`crate::fanout`]) takes it off before the stores see it and
//! keeps the shard's series after merging and deduplication, so the hash is over the
//! labels the engine sees (replica labels dropped, external labels added).

use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::{MatchOp, Matcher};

/// Mimir's reserved label name of the shard matcher.
pub const SHARD_LABEL: &str = "__query_shard__";

/// One shard: 0-based `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSelector {
    pub index: u64,
    pub count: u64,
}

/// A shard matcher that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard ID: {0:?} (want \"<index>_of_<count>\", 1 <= index <= count)")]
pub struct InvalidShard(pub String);

impl ShardSelector {
    /// Mimir's label value: the 1-based index, `_of_`, the count.
    pub fn label_value(&self) -> String {
        format!("{}_of_{}", self.index + 1, self.count)
    }

    /// Read `"i_of_n"` (1-based `i`).
    pub fn parse(v: &str) -> Result<ShardSelector, InvalidShard> {
        let bad = || InvalidShard(v.to_string());
        let (i, n) = v.split_once("_of_").ok_or_else(bad)?;
        let i: u64 = i.parse().map_err(|_| bad())?;
        let n: u64 = n.parse().map_err(|_| bad())?;
        if i == 0 || n == 0 || i > n {
            return Err(bad());
        }
        Ok(ShardSelector {
            index: i - 1,
            count: n,
        })
    }

    /// Whether the series `labels` belongs to this shard.
    pub fn owns(&self, labels: &Labels) -> bool {
        self.count <= 1 || series_hash(labels) % self.count == self.index
    }

    /// The shard equality matcher among `matchers` (Mimir takes the first `=` one),
    /// and the matchers without it. Other operators on the label are left as they are
    /// (they match the label's absence like any other).
    pub fn take_from(
        matchers: &[Matcher],
    ) -> Result<Option<(ShardSelector, Vec<Matcher>)>, InvalidShard> {
        let Some(i) = matchers
            .iter()
            .position(|m| m.name == SHARD_LABEL && m.op == MatchOp::Equal)
        else {
            return Ok(None);
        };
        let shard = ShardSelector::parse(&matchers[i].value)?;
        let mut rest = matchers.to_vec();
        rest.remove(i);
        Ok(Some((shard, rest)))
    }
}

/// A stable 64-bit hash of a series' labels (every label, the name included, as
/// Mimir's `labels.StableHash`): FNV-1a over `name 0xff value 0xff` for each label in
/// order. It must not change between releases: queriers of two versions behind one
/// frontend would otherwise split series differently.
pub fn series_hash(labels: &Labels) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h ^= u64::from(x);
            h = h.wrapping_mul(PRIME);
        }
    };
    for l in labels.iter() {
        eat(l.name.as_bytes());
        eat(&[0xff]);
        eat(l.value.as_bytes());
        eat(&[0xff]);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_read_as_mimir_writes_them() {
        let s = ShardSelector::parse("3_of_16").unwrap();
        assert_eq!(
            s,
            ShardSelector {
                index: 2,
                count: 16
            }
        );
        assert_eq!(s.label_value(), "3_of_16");
        for bad in [
            "0_of_4",
            "5_of_4",
            "1_of_0",
            "1of4",
            "a_of_4",
            "1_of_4_of_5",
            "",
        ] {
            assert!(ShardSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_series_is_in_exactly_one_shard() {
        let n = 7;
        let mut per = vec![0usize; n as usize];
        for i in 0..2000 {
            let l = Labels::from_pairs([("__name__", "m"), ("i", &i.to_string())]);
            let owners: Vec<u64> = (0..n)
                .filter(|&k| ShardSelector { index: k, count: n }.owns(&l))
                .collect();
            assert_eq!(owners.len(), 1);
            per[owners[0] as usize] += 1;
        }
        // FNV spreads them: no shard empty or holding most
        assert!(per.iter().all(|&c| c > 150 && c < 450), "{per:?}");
    }

    #[test]
    fn the_shard_matcher_is_taken_off() {
        let ms = vec![
            Matcher::equal("__name__", "up"),
            Matcher::equal(SHARD_LABEL, "2_of_3"),
        ];
        let (s, rest) = ShardSelector::take_from(&ms).unwrap().unwrap();
        assert_eq!(s.index, 1);
        assert_eq!(rest, vec![Matcher::equal("__name__", "up")]);
        assert!(ShardSelector::take_from(&rest).unwrap().is_none());
        assert!(ShardSelector::take_from(&[Matcher::equal(SHARD_LABEL, "x")]).is_err());
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: a change would split series differently across versions.
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        assert_eq!(series_hash(&l), series_hash(&l.clone()));
        assert_eq!(series_hash(&Labels::new()), 0xcbf2_9ce4_8422_2325);
    }
}
