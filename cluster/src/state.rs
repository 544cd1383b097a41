//! What the replicated KV holds and how each command changes it. Every decision that
//! depends on time uses the `now_ms` the proposer put in the command, so every replica
//! applies the log to the same state.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::ring::{InstanceDesc, InstanceState};

/// The HA tracker's elected replica of one (tenant, cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaReplica {
    pub replica: String,
    /// Wall-clock milliseconds of the last sample seen from it, as proposed.
    pub received_ms: i64,
    /// Wall-clock milliseconds of the election.
    pub elected_ms: i64,
}

/// The replicated state: ring members and HA elections.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterState {
    /// By instance id.
    pub members: BTreeMap<String, InstanceDesc>,
    /// By `tenant/cluster` (a tenant ID has no `/`).
    pub ha: BTreeMap<String, HaReplica>,
}

/// A change to the state (the raft log's entries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Add an instance, or take over an entry of the same id whose holder went silent
    /// (keeping its tokens). Refused when a healthy instance holds the id elsewhere.
    Register {
        desc: InstanceDesc,
        now_ms: i64,
        heartbeat_timeout_ms: i64,
    },
    /// A heartbeat, with a state change when `state` is set.
    Heartbeat {
        id: String,
        addr: String,
        now_ms: i64,
        state: Option<InstanceState>,
    },
    /// The instance left the ring.
    Remove { id: String },
    /// The HA tracker saw a sample from `replica` at `now_ms`: keep or elect.
    HaElect {
        tenant: String,
        cluster: String,
        replica: String,
        now_ms: i64,
        failover_timeout_ms: i64,
    },
}

/// What a command did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    #[default]
    Ok,
    /// Register: the id is held by a healthy instance at another address.
    IdInUse { addr: String, heartbeat_ms: i64 },
    /// Heartbeat: the id is not a member (it was removed); register again.
    NotMember,
    /// HaElect: the replica now elected (`changed` when this command elected it).
    HaElected { replica: String, changed: bool },
}

pub fn ha_key(tenant: &str, cluster: &str) -> String {
    format!("{tenant}/{cluster}")
}

impl ClusterState {
    pub fn apply(&mut self, cmd: &Command) -> Reply {
        match cmd {
            Command::Register {
                desc,
                now_ms,
                heartbeat_timeout_ms,
            } => {
                if let Some(old) = self.members.get(&desc.id) {
                    if old.addr != desc.addr && old.is_healthy(*now_ms, *heartbeat_timeout_ms) {
                        return Reply::IdInUse {
                            addr: old.addr.clone(),
                            heartbeat_ms: old.heartbeat_ms,
                        };
                    }
                }
                let mut d = desc.clone();
                if let Some(old) = self.members.get(&desc.id) {
                    // a restarted instance keeps its place on the ring
                    if !old.tokens.is_empty() {
                        d.tokens = old.tokens.clone();
                    }
                    d.registered_ms = old.registered_ms;
                } else {
                    // tokens another member already holds are dropped, not shared
                    let taken: HashSet<u32> = self
                        .members
                        .values()
                        .flat_map(|m| m.tokens.iter().copied())
                        .collect();
                    d.tokens.retain(|t| !taken.contains(t));
                }
                d.heartbeat_ms = *now_ms;
                self.members.insert(d.id.clone(), d);
                Reply::Ok
            }
            Command::Heartbeat {
                id,
                addr,
                now_ms,
                state,
            } => match self.members.get_mut(id) {
                Some(m) if &m.addr == addr => {
                    m.heartbeat_ms = m.heartbeat_ms.max(*now_ms);
                    if let Some(s) = state {
                        m.state = *s;
                    }
                    Reply::Ok
                }
                Some(m) => Reply::IdInUse {
                    addr: m.addr.clone(),
                    heartbeat_ms: m.heartbeat_ms,
                },
                None => Reply::NotMember,
            },
            Command::Remove { id } => {
                self.members.remove(id);
                Reply::Ok
            }
            Command::HaElect {
                tenant,
                cluster,
                replica,
                now_ms,
                failover_timeout_ms,
            } => {
                let key = ha_key(tenant, cluster);
                match self.ha.get_mut(&key) {
                    Some(e) if &e.replica == replica => {
                        e.received_ms = e.received_ms.max(*now_ms);
                        Reply::HaElected {
                            replica: replica.clone(),
                            changed: false,
                        }
                    }
                    Some(e) if now_ms - e.received_ms <= *failover_timeout_ms => Reply::HaElected {
                        replica: e.replica.clone(),
                        changed: false,
                    },
                    _ => {
                        self.ha.insert(
                            key,
                            HaReplica {
                                replica: replica.clone(),
                                received_ms: *now_ms,
                                elected_ms: *now_ms,
                            },
                        );
                        Reply::HaElected {
                            replica: replica.clone(),
                            changed: true,
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(id: &str, addr: &str) -> InstanceDesc {
        InstanceDesc {
            id: id.into(),
            addr: addr.into(),
            http_addr: String::new(),
            zone: String::new(),
            state: InstanceState::Joining,
            tokens: vec![1, 2, 3],
            heartbeat_ms: 0,
            registered_ms: 0,
        }
    }

    fn register(id: &str, addr: &str, now_ms: i64) -> Command {
        Command::Register {
            desc: desc(id, addr),
            now_ms,
            heartbeat_timeout_ms: 60_000,
        }
    }

    #[test]
    fn an_id_held_by_a_live_instance_is_refused() {
        let mut s = ClusterState::default();
        assert_eq!(s.apply(&register("a", "h1:1", 1000)), Reply::Ok);
        assert!(matches!(
            s.apply(&register("a", "h2:1", 2000)),
            Reply::IdInUse { .. }
        ));
        // after the holder went silent for the timeout, the id can move
        assert_eq!(s.apply(&register("a", "h2:1", 70_000)), Reply::Ok);
        assert_eq!(s.members["a"].addr, "h2:1");
        // a restart at the same address keeps its tokens
        let mut d = desc("a", "h2:1");
        d.tokens = vec![9];
        s.apply(&Command::Register {
            desc: d,
            now_ms: 71_000,
            heartbeat_timeout_ms: 60_000,
        });
        assert_eq!(s.members["a"].tokens, vec![1, 2, 3]);
    }

    #[test]
    fn a_newcomer_never_shares_tokens() {
        let mut s = ClusterState::default();
        s.apply(&register("a", "h1:1", 0));
        let mut d = desc("b", "h2:1");
        d.tokens = vec![2, 3, 4];
        s.apply(&Command::Register {
            desc: d,
            now_ms: 0,
            heartbeat_timeout_ms: 1,
        });
        assert_eq!(s.members["b"].tokens, vec![4]);
    }

    #[test]
    fn ha_election_follows_the_failover_timeout() {
        let mut s = ClusterState::default();
        let elect = |r: &str, now_ms| Command::HaElect {
            tenant: "t".into(),
            cluster: "c".into(),
            replica: r.into(),
            now_ms,
            failover_timeout_ms: 30_000,
        };
        let got = |r: Reply| match r {
            Reply::HaElected { replica, changed } => (replica, changed),
            r => panic!("{r:?}"),
        };
        assert_eq!(got(s.apply(&elect("a", 0))), ("a".into(), true));
        assert_eq!(got(s.apply(&elect("b", 10_000))), ("a".into(), false));
        assert_eq!(got(s.apply(&elect("a", 20_000))), ("a".into(), false));
        assert_eq!(got(s.apply(&elect("b", 50_000))), ("a".into(), false));
        assert_eq!(got(s.apply(&elect("b", 50_001))), ("b".into(), true));
        assert_eq!(s.ha["t/c"].replica, "b");
    }

    #[test]
    fn heartbeats_change_state_and_removed_members_must_register() {
        let mut s = ClusterState::default();
        s.apply(&register("a", "h:1", 0));
        let hb = |st| Command::Heartbeat {
            id: "a".into(),
            addr: "h:1".into(),
            now_ms: 5,
            state: st,
        };
        assert_eq!(s.apply(&hb(Some(InstanceState::Active))), Reply::Ok);
        assert_eq!(s.members["a"].state, InstanceState::Active);
        assert_eq!(s.members["a"].heartbeat_ms, 5);
        s.apply(&Command::Remove { id: "a".into() });
        assert_eq!(s.apply(&hb(None)), Reply::NotMember);
    }
}
