//! The consistent-hash ring (Mimir's model): every ingester owns many random tokens on
//! a 32-bit circle; a series is hashed (tenant + sorted labels) onto the circle and
//! stored by the first `replication_factor` distinct instances clockwise from its hash,
//! in distinct zones when zone awareness is on.
//!
//! Instances that are not ACTIVE (JOINING or LEAVING) are passed over and the walk goes
//! on, so a series keeps `replication_factor` writable owners while one joins or
//! leaves. Instances that missed their heartbeats stay in the set (ownership must not
//! move because a process is briefly away); writes to them fail and count against
//! quorum, as in Mimir.

use std::collections::HashSet;

use rand::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

/// Default number of tokens per instance: enough that each of N instances owns
/// 1/N ± 10% of the ring without a token-placement strategy.
pub const DEFAULT_NUM_TOKENS: usize = 512;

/// An instance's place in its life cycle (Mimir's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceState {
    /// Registered with tokens, not yet taking writes.
    Joining,
    /// Taking writes and serving reads.
    Active,
    /// Stopping: takes no new writes, flushes its head to the bucket, then leaves.
    Leaving,
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceState::Joining => "JOINING",
            InstanceState::Active => "ACTIVE",
            InstanceState::Leaving => "LEAVING",
        })
    }
}

/// One ring member, as the replicated KV holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceDesc {
    pub id: String,
    /// gRPC `host:port`: Store API, forwarded pushes, raft.
    pub addr: String,
    /// HTTP `host:port` (for people and the ring page), may be empty.
    #[serde(default)]
    pub http_addr: String,
    #[serde(default)]
    pub zone: String,
    pub state: InstanceState,
    /// Sorted.
    pub tokens: Vec<u32>,
    /// Wall-clock milliseconds of the last heartbeat.
    pub heartbeat_ms: i64,
    pub registered_ms: i64,
}

impl InstanceDesc {
    /// Whether the instance has heartbeated within `timeout_ms` of `now_ms`.
    pub fn is_healthy(&self, now_ms: i64, timeout_ms: i64) -> bool {
        timeout_ms <= 0 || now_ms - self.heartbeat_ms <= timeout_ms
    }
}

/// The ring built from the members: tokens sorted for lookups.
#[derive(Debug, Clone, Default)]
pub struct Ring {
    instances: Vec<InstanceDesc>,
    /// (token, instance index), sorted by token.
    tokens: Vec<(u32, u32)>,
    /// Zone index of each instance.
    zone_of: Vec<u32>,
    num_zones: usize,
}

impl Ring {
    /// A ring over `instances` (any order; kept sorted by id).
    pub fn new(instances: impl IntoIterator<Item = InstanceDesc>) -> Ring {
        let mut instances: Vec<InstanceDesc> = instances.into_iter().collect();
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let mut zones: Vec<&str> = instances.iter().map(|i| i.zone.as_str()).collect();
        zones.sort_unstable();
        zones.dedup();
        let zone_of = instances
            .iter()
            .map(|i| zones.binary_search(&i.zone.as_str()).unwrap_or(0) as u32)
            .collect();
        let num_zones = zones.len();
        let mut tokens: Vec<(u32, u32)> = instances
            .iter()
            .enumerate()
            .flat_map(|(idx, i)| i.tokens.iter().map(move |&t| (t, idx as u32)))
            .collect();
        tokens.sort_unstable();
        // Two instances claiming one token: the lower id keeps it (deterministic).
        tokens.dedup_by_key(|(t, _)| *t);
        Ring {
            instances,
            tokens,
            zone_of,
            num_zones,
        }
    }

    pub fn instances(&self) -> &[InstanceDesc] {
        &self.instances
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn num_zones(&self) -> usize {
        self.num_zones
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.instances
            .binary_search_by(|i| i.id.as_str().cmp(id))
            .ok()
    }

    /// The owners of `key` for writes: up to `rf` distinct ACTIVE instances clockwise
    /// from `key` (distinct zones when `zone_aware`), as indexes into
    /// [`Ring::instances`], written into `out` (cleared first; the caller reuses it).
    pub fn replicas(&self, key: u32, rf: usize, zone_aware: bool, out: &mut Vec<usize>) {
        out.clear();
        if self.tokens.is_empty() || rf == 0 {
            return;
        }
        let start = self.tokens.partition_point(|(t, _)| *t < key);
        let n = self.tokens.len();
        let mut zones_used: u64 = 0;
        for k in 0..n {
            let idx = self.tokens[(start + k) % n].1 as usize;
            if out.contains(&idx) {
                continue;
            }
            if self.instances[idx].state != InstanceState::Active {
                continue;
            }
            if zone_aware {
                let z = self.zone_of[idx] as u64 % 64;
                if zones_used & (1 << z) != 0 {
                    continue;
                }
                zones_used |= 1 << z;
            }
            out.push(idx);
            if out.len() == rf {
                break;
            }
        }
    }

    /// The share of the token space each instance owns as the first replica, by
    /// instance index (sums to 1 over a non-empty ring).
    pub fn ownership(&self) -> Vec<f64> {
        let mut owned = vec![0u64; self.instances.len()];
        let n = self.tokens.len();
        for k in 0..n {
            let (t, idx) = self.tokens[k];
            let prev = if k == 0 {
                self.tokens[n - 1].0
            } else {
                self.tokens[k - 1].0
            };
            // the range (prev, t] belongs to t's instance; the first wraps around
            let span = if n == 1 {
                1u64 << 32
            } else {
                (t.wrapping_sub(prev)) as u64
            };
            owned[idx as usize] += span;
        }
        owned
            .iter()
            .map(|&o| o as f64 / (1u64 << 32) as f64)
            .collect()
    }
}

/// The ring position of a series: a word-at-a-time multiply-rotate hash over the tenant
/// and the labels sorted by name (each preceded by its lengths, so `a="bc"` and
/// `ab="c"` differ), finished with MurmurHash3's 64-bit avalanche. Labels in any order
/// hash the same. The function is part of the cluster's contract: every member must
/// compute it the same way, so it never changes between versions.
pub fn shard_key<'a>(tenant: &str, labels: &[(&'a str, &'a str)]) -> u32 {
    let mut h = KeyHasher(0x243f_6a88_85a3_08d3);
    h.write(tenant.as_bytes());
    let sorted = labels.windows(2).all(|w| w[0].0 <= w[1].0);
    if sorted {
        for (n, v) in labels {
            h.label(n, v);
        }
    } else {
        let mut v: Vec<(&str, &str)> = labels.to_vec();
        v.sort_unstable();
        for (n, val) in v {
            h.label(n, val);
        }
    }
    h.finish()
}

struct KeyHasher(u64);

impl KeyHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    #[inline]
    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(Self::K).rotate_left(29);
    }

    #[inline]
    fn write(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(buf));
        }
    }

    #[inline]
    fn label(&mut self, n: &str, v: &str) {
        self.word((n.len() as u64) | ((v.len() as u64) << 32));
        self.write(n.as_bytes());
        self.write(v.as_bytes());
    }

    fn finish(self) -> u32 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        (x ^ (x >> 32)) as u32
    }
}

/// A stable 64-bit id for a node name (raft needs integer ids).
pub fn node_id_hash(name: &str) -> u64 {
    // FNV-1a 64
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `n` new tokens for instance `id`, none in `taken`. Seeded by the id, so an instance
/// that lost its state takes the same tokens again.
pub fn generate_tokens(id: &str, n: usize, taken: &HashSet<u32>) -> Vec<u32> {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(node_id_hash(id));
    let mut out = Vec::with_capacity(n);
    let mut mine = HashSet::with_capacity(n);
    while out.len() < n {
        let t = rng.next_u32();
        if taken.contains(&t) || !mine.insert(t) {
            continue;
        }
        out.push(t);
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, zone: &str, taken: &mut HashSet<u32>) -> InstanceDesc {
        let tokens = generate_tokens(id, DEFAULT_NUM_TOKENS, taken);
        taken.extend(tokens.iter().copied());
        InstanceDesc {
            id: id.into(),
            addr: format!("{id}:9095"),
            http_addr: String::new(),
            zone: zone.into(),
            state: InstanceState::Active,
            tokens,
            heartbeat_ms: 0,
            registered_ms: 0,
        }
    }

    fn ring_of(n: usize, zones: usize) -> Ring {
        let mut taken = HashSet::new();
        Ring::new((0..n).map(|i| {
            member(
                &format!("ingester-{i}"),
                &format!("zone-{}", i % zones.max(1)),
                &mut taken,
            )
        }))
    }

    #[test]
    fn default_tokens_spread_ownership_evenly() {
        // Each of N members owns 1/N within ±10% (relative) with the default token count.
        for n in 2..=12 {
            let r = ring_of(n, 1);
            let own = r.ownership();
            let total: f64 = own.iter().sum();
            assert!((total - 1.0).abs() < 1e-9, "ownership sums to {total}");
            for (i, o) in own.iter().enumerate() {
                let rel = o * n as f64;
                assert!(
                    (0.9..=1.1).contains(&rel),
                    "{n} members: member {i} owns {:.2}% (1/N = {:.2}%)",
                    o * 100.0,
                    100.0 / n as f64
                );
            }
        }
    }

    fn series_keys(count: usize) -> Vec<u32> {
        (0..count)
            .map(|i| {
                let v = i.to_string();
                shard_key("tenant", &[("__name__", "up"), ("instance", &v)])
            })
            .collect()
    }

    #[test]
    fn adding_a_member_moves_about_one_share() {
        let keys = series_keys(100_000);
        let mut buf = Vec::new();
        for n in 3..=8 {
            let before = ring_of(n, 1);
            let after = ring_of(n + 1, 1);
            let new_idx = after.index_of(&format!("ingester-{n}")).unwrap();
            let mut moved = 0;
            for &k in &keys {
                before.replicas(k, 1, false, &mut buf);
                let a = before.instances()[buf[0]].id.clone();
                after.replicas(k, 1, false, &mut buf);
                let b = &after.instances()[buf[0]].id;
                if &a != b {
                    moved += 1;
                    // consistent hashing: series only move to the newcomer
                    assert_eq!(buf[0], new_idx, "a series moved between old members");
                }
            }
            let frac = moved as f64 / keys.len() as f64;
            let want = 1.0 / (n + 1) as f64;
            assert!(
                (frac - want).abs() <= want * 0.15,
                "{n}->{} members moved {:.3} of series, expected ≈ {want:.3}",
                n + 1,
                frac
            );
        }
    }

    #[test]
    fn replicas_are_distinct_and_zone_aware() {
        let r = ring_of(9, 3);
        let mut buf = Vec::new();
        for k in series_keys(10_000) {
            r.replicas(k, 3, true, &mut buf);
            assert_eq!(buf.len(), 3);
            let mut zones: Vec<&str> = buf
                .iter()
                .map(|&i| r.instances()[i].zone.as_str())
                .collect();
            zones.sort_unstable();
            zones.dedup();
            assert_eq!(zones.len(), 3, "replicas of {k} share a zone");
            r.replicas(k, 3, false, &mut buf);
            let mut ids = buf.clone();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 3);
        }
    }

    #[test]
    fn zone_aware_without_enough_zones_gives_one_per_zone() {
        let r = ring_of(4, 2);
        let mut buf = Vec::new();
        r.replicas(12345, 3, true, &mut buf);
        assert_eq!(buf.len(), 2);
        r.replicas(12345, 3, false, &mut buf);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn joining_and_leaving_members_are_passed_over() {
        let mut taken = HashSet::new();
        let mut m: Vec<InstanceDesc> = (0..4)
            .map(|i| member(&format!("i{i}"), "", &mut taken))
            .collect();
        m[1].state = InstanceState::Leaving;
        m[2].state = InstanceState::Joining;
        let r = Ring::new(m);
        let mut buf = Vec::new();
        for k in series_keys(1000) {
            r.replicas(k, 3, false, &mut buf);
            let ids: Vec<&str> = buf.iter().map(|&i| r.instances()[i].id.as_str()).collect();
            assert_eq!(buf.len(), 2, "only two ACTIVE members");
            assert!(!ids.contains(&"i1") && !ids.contains(&"i2"));
        }
    }

    const PINNED: u32 = 19_245_023;

    #[test]
    fn label_order_does_not_change_the_key() {
        let a = shard_key("t", &[("a", "1"), ("b", "2")]);
        let b = shard_key("t", &[("b", "2"), ("a", "1")]);
        assert_eq!(a, b);
        assert_ne!(a, shard_key("u", &[("a", "1"), ("b", "2")]));
        assert_ne!(
            shard_key("t", &[("a", "bc")]),
            shard_key("t", &[("ab", "c")])
        );
        assert_ne!(shard_key("t", &[("a", "")]), shard_key("t", &[("a", "\0")]));
        // pinned: where a series lives must not change between versions
        assert_eq!(
            shard_key("tenant", &[("__name__", "up"), ("job", "node")]),
            PINNED
        );
    }

    #[test]
    fn tokens_are_stable_and_unique() {
        let mut taken = HashSet::new();
        let a = generate_tokens("x", 512, &taken);
        assert_eq!(a, generate_tokens("x", 512, &taken));
        taken.extend(a.iter().copied());
        let b = generate_tokens("y", 512, &taken);
        assert!(b.iter().all(|t| !taken.contains(t)));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
    }
}
