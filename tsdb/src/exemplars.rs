//! Exemplars: a bounded circular store (Prometheus's `CircularExemplarStorage`
//! semantics: one ring of at most `max` exemplars shared by every series, the oldest
//! overwritten first, per-series chains from oldest to newest) and the WAL payload of
//! exemplar records (Prometheus's record type 4).
//!
//! Rules as Prometheus's `validateExemplar`: an exemplar equal to its series' newest is a
//! duplicate (accepted, not stored again); one not newer than the series' newest is out
//! of order; label sets over 128 characters (names and values together) are refused.

use std::collections::HashMap;

use crate::labels::{Interner, Label, Labels};
use crate::matcher::Matcher;
use crate::varint::{self, put_uvarint, put_uvarint_bytes, put_varint};

/// Prometheus's `exemplar.ExemplarMaxLabelSetLength`, in characters.
pub const MAX_LABEL_SET_LENGTH: usize = 128;

/// One exemplar: its own labels (e.g. `trace_id`), value and timestamp (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub labels: Labels,
    pub value: f64,
    pub ts: i64,
}

impl Exemplar {
    fn same(&self, o: &Exemplar) -> bool {
        self.ts == o.ts && self.value.to_bits() == o.value.to_bits() && self.labels == o.labels
    }
}

/// Why an exemplar was not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExemplarError {
    #[error("out of order exemplar")]
    OutOfOrder,
    #[error("exemplar label set is longer than {MAX_LABEL_SET_LENGTH} characters")]
    LabelSetTooLong,
}

struct Entry {
    series: Labels,
    ex: Exemplar,
    /// The same series' next newer entry.
    next: Option<usize>,
}

#[derive(Clone, Copy)]
struct Chain {
    oldest: usize,
    newest: usize,
}

/// The circular store. Memory grows with what is stored, up to `max` entries.
pub struct ExemplarStore {
    max: usize,
    entries: Vec<Entry>,
    /// Where the next exemplar goes once the ring is full (the oldest entry).
    next: usize,
    index: HashMap<Labels, Chain>,
}

impl std::fmt::Debug for ExemplarStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExemplarStore")
            .field("max", &self.max)
            .field("len", &self.entries.len())
            .finish()
    }
}

impl ExemplarStore {
    /// A store of at most `max` exemplars; 0 stores nothing.
    pub fn new(max: usize) -> Self {
        ExemplarStore {
            max,
            entries: Vec::new(),
            next: 0,
            index: HashMap::new(),
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Check `ex` for `series` without storing it: `Ok(true)` if [`ExemplarStore::add`]
    /// would store it, `Ok(false)` for a duplicate of the series' newest.
    pub fn validate(&self, series: &Labels, ex: &Exemplar) -> Result<bool, ExemplarError> {
        let len: usize = ex
            .labels
            .iter()
            .map(|l| l.name.chars().count() + l.value.chars().count())
            .sum();
        if len > MAX_LABEL_SET_LENGTH {
            return Err(ExemplarError::LabelSetTooLong);
        }
        if self.max == 0 {
            return Ok(false);
        }
        if let Some(c) = self.index.get(series) {
            let newest = &self.entries[c.newest].ex;
            if newest.same(ex) {
                return Ok(false);
            }
            if ex.ts <= newest.ts {
                return Err(ExemplarError::OutOfOrder);
            }
        }
        Ok(true)
    }

    /// Store `ex` for `series`, overwriting the oldest exemplar when full. `Ok(false)`:
    /// a duplicate (or the store is disabled), nothing stored.
    pub fn add(&mut self, series: &Labels, ex: Exemplar) -> Result<bool, ExemplarError> {
        if !self.validate(series, &ex)? {
            return Ok(false);
        }
        let slot = if self.entries.len() < self.max {
            self.entries.push(Entry {
                series: series.clone(),
                ex,
                next: None,
            });
            self.entries.len() - 1
        } else {
            let slot = self.next;
            self.next = (self.next + 1) % self.max;
            self.evict(slot);
            let e = &mut self.entries[slot];
            e.series = series.clone();
            e.ex = ex;
            e.next = None;
            slot
        };
        match self.index.get_mut(series) {
            Some(c) => {
                let prev = c.newest;
                c.newest = slot;
                self.entries[prev].next = Some(slot);
            }
            None => {
                self.index.insert(
                    series.clone(),
                    Chain {
                        oldest: slot,
                        newest: slot,
                    },
                );
            }
        }
        Ok(true)
    }

    /// Unlink the entry at `slot` (the oldest of the whole ring, so the oldest of its
    /// series) from its series' chain.
    fn evict(&mut self, slot: usize) {
        let e = &self.entries[slot];
        let next = e.next;
        if let Some(c) = self.index.get_mut(&e.series) {
            match next {
                Some(n) if c.oldest == slot => c.oldest = n,
                Some(_) => {}
                None => {
                    let s = e.series.clone();
                    self.index.remove(&s);
                }
            }
        }
    }

    /// Exemplars in `[start, end]` of the series matching any of `matcher_sets`, sorted
    /// by series labels, each series' exemplars oldest first; series without exemplars
    /// in range are left out.
    pub fn select(
        &self,
        start: i64,
        end: i64,
        matcher_sets: &[Vec<Matcher>],
    ) -> Vec<(Labels, Vec<Exemplar>)> {
        let mut out = Vec::new();
        for (series, c) in &self.index {
            let matches = matcher_sets.iter().any(|ms| {
                ms.iter()
                    .all(|m| m.matches(series.get(&m.name).unwrap_or("")))
            });
            if !matches {
                continue;
            }
            let mut exs = Vec::new();
            let mut at = Some(c.oldest);
            while let Some(i) = at {
                let e = &self.entries[i];
                if e.ex.ts >= start && e.ex.ts <= end {
                    exs.push(e.ex.clone());
                }
                at = e.next;
            }
            if !exs.is_empty() {
                out.push((series.clone(), exs));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every stored exemplar with its series, oldest first (for WAL checkpoints).
    pub fn snapshot(&self) -> Vec<(Labels, Exemplar)> {
        let n = self.entries.len();
        let start = if n < self.max { 0 } else { self.next };
        (0..n)
            .map(|i| {
                let e = &self.entries[(start + i) % n];
                (e.series.clone(), e.ex.clone())
            })
            .collect()
    }
}

/// An exemplar as the WAL holds it: the head series' ref instead of its labels.
#[derive(Debug, Clone, PartialEq)]
pub struct RefExemplar {
    pub series: u64,
    pub ts: i64,
    pub value: f64,
    pub labels: Labels,
}

/// The payload of an exemplar record, Prometheus's layout
/// (`EncodeExemplarsIntoBuffer`): the first entry's ref and timestamp as big-endian
/// 64-bit bases, then per entry `varint(ref - base) varint(t - base)`, the value's bits
/// big-endian, and the labels (`uvarint(n)` then length-prefixed names and values).
/// Empty for no entries.
pub fn encode_wal(buf: &mut Vec<u8>, entries: &[RefExemplar]) {
    let Some(first) = entries.first() else {
        return;
    };
    buf.extend_from_slice(&first.series.to_be_bytes());
    buf.extend_from_slice(&first.ts.to_be_bytes());
    for e in entries {
        put_varint(buf, e.series.wrapping_sub(first.series) as i64);
        put_varint(buf, e.ts.wrapping_sub(first.ts));
        buf.extend_from_slice(&e.value.to_bits().to_be_bytes());
        put_uvarint(buf, e.labels.len() as u64);
        for l in &e.labels {
            put_uvarint_bytes(buf, l.name.as_bytes());
            put_uvarint_bytes(buf, l.value.as_bytes());
        }
    }
}

/// Decode [`encode_wal`]'s payload, interning label strings.
pub fn decode_wal(
    payload: &[u8],
    interner: &mut Interner,
) -> Result<Vec<RefExemplar>, &'static str> {
    let mut out = Vec::new();
    if payload.is_empty() {
        return Ok(out);
    }
    let mut b = payload;
    let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>, &'static str> {
        if b.len() < n {
            return Err("truncated exemplar record");
        }
        let (v, rest) = b.split_at(n);
        *b = rest;
        Ok(v.to_vec())
    };
    let be = |v: Vec<u8>| u64::from_be_bytes(v.try_into().expect("8 bytes"));
    let base_ref = be(take(&mut b, 8)?);
    let base_t = be(take(&mut b, 8)?) as i64;
    let uv = |b: &mut &[u8]| -> Result<u64, &'static str> {
        let (v, n) = varint::uvarint(b).map_err(|_| "bad varint in exemplar record")?;
        *b = &b[n..];
        Ok(v)
    };
    let sv = |b: &mut &[u8]| -> Result<i64, &'static str> {
        let (v, n) = varint::varint(b).map_err(|_| "bad varint in exemplar record")?;
        *b = &b[n..];
        Ok(v)
    };
    while !b.is_empty() {
        let dr = sv(&mut b)?;
        let dt = sv(&mut b)?;
        let value = f64::from_bits(be(take(&mut b, 8)?));
        let n = uv(&mut b)?;
        if n > b.len() as u64 / 2 {
            return Err("exemplar label count exceeds payload");
        }
        let mut labels: Vec<Label> = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut s = [String::new(), String::new()];
            for part in &mut s {
                let len = uv(&mut b)?;
                if len > b.len() as u64 {
                    return Err("exemplar label exceeds payload");
                }
                *part = String::from_utf8(take(&mut b, len as usize)?)
                    .map_err(|_| "exemplar label is not UTF-8")?;
            }
            labels.push(Label {
                name: interner.intern(&s[0]),
                value: interner.intern(&s[1]),
            });
        }
        out.push(RefExemplar {
            series: base_ref.wrapping_add(dr as u64),
            ts: base_t.wrapping_add(dt),
            value,
            labels: Labels::from_vec(labels),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(trace: &str, v: f64, ts: i64) -> Exemplar {
        Exemplar {
            labels: Labels::from_pairs([("trace_id", trace)]),
            value: v,
            ts,
        }
    }

    #[test]
    fn ring_overwrites_oldest_and_keeps_chains() {
        let a = Labels::from_pairs([("__name__", "x"), ("i", "a")]);
        let b = Labels::from_pairs([("__name__", "x"), ("i", "b")]);
        let mut s = ExemplarStore::new(3);
        assert_eq!(s.add(&a, ex("1", 1.0, 10)), Ok(true));
        assert_eq!(s.add(&b, ex("2", 2.0, 11)), Ok(true));
        assert_eq!(s.add(&a, ex("3", 3.0, 12)), Ok(true));
        // duplicate of a's newest: accepted, not stored
        assert_eq!(s.add(&a, ex("3", 3.0, 12)), Ok(false));
        assert_eq!(s.add(&a, ex("0", 3.0, 5)), Err(ExemplarError::OutOfOrder));
        // full: overwrites a@10, then b@11 (b's only one: b leaves the index)
        assert_eq!(s.add(&a, ex("4", 4.0, 13)), Ok(true));
        assert_eq!(s.add(&a, ex("5", 5.0, 14)), Ok(true));
        let all = vec![vec![Matcher::equal("__name__", "x")]];
        let got = s.select(i64::MIN, i64::MAX, &all);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, a);
        let ts: Vec<i64> = got[0].1.iter().map(|e| e.ts).collect();
        assert_eq!(ts, vec![12, 13, 14]);
        assert_eq!(s.select(13, 13, &all)[0].1.len(), 1);
        let snap: Vec<i64> = s.snapshot().iter().map(|(_, e)| e.ts).collect();
        assert_eq!(snap, vec![12, 13, 14]);
        // b is gone: its chain was fully overwritten
        let only_b = vec![vec![Matcher::equal("i", "b")]];
        assert!(s.select(i64::MIN, i64::MAX, &only_b).is_empty());
    }

    #[test]
    fn disabled_and_too_long() {
        let a = Labels::from_pairs([("__name__", "x")]);
        let mut s = ExemplarStore::new(0);
        assert_eq!(s.add(&a, ex("1", 1.0, 1)), Ok(false));
        assert!(s.is_empty());
        let long = ex(&"x".repeat(121), 1.0, 1);
        assert_eq!(
            ExemplarStore::new(10).add(&a, long),
            Err(ExemplarError::LabelSetTooLong)
        );
    }

    #[test]
    fn wal_round_trip() {
        let entries = vec![
            RefExemplar {
                series: 7,
                ts: 1_700_000_000_000,
                value: 0.25,
                labels: Labels::from_pairs([("trace_id", "abc"), ("span_id", "1")]),
            },
            RefExemplar {
                series: 3,
                ts: 1_699_999_999_000,
                value: f64::NAN,
                labels: Labels::new(),
            },
        ];
        let mut buf = Vec::new();
        encode_wal(&mut buf, &entries);
        // base ref, big-endian, as Prometheus writes it
        assert_eq!(&buf[..8], &7u64.to_be_bytes());
        let back = decode_wal(&buf, &mut Interner::new()).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], entries[0]);
        assert_eq!(back[1].series, 3);
        assert!(back[1].value.is_nan());
        for cut in 1..buf.len() {
            // a truncated payload is an error or fewer entries, never a panic
            let _ = decode_wal(&buf[..cut], &mut Interner::new());
        }
        assert!(decode_wal(&[], &mut Interner::new()).unwrap().is_empty());
    }
}
