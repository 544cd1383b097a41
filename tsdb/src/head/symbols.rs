//! The head's symbol table and its series' label sets as symbol ids.
//!
//! Each distinct label string is kept once under a `u32` id ([`SymbolTable`]), so a
//! series' labels are (name id, value id) pairs behind one thin pointer
//! ([`LabelIds`]): 4 bytes a label (8 when an id of the set is 2^16 or more) instead
//! of two 8-byte [`Symbol`] pointers, and an 8-byte field in the series instead of a
//! 16-byte boxed slice.
//!
//! An id counts the labels of live series that use it, and its symbol is dropped (the
//! id reused) when the last of them is removed. Counting per id rather than sweeping
//! every series at truncation (Prometheus's symbol rebuild) keeps a truncation's cost
//! in proportion to the series it removes, and frees strings at once.
//!
//! Lock order: the head keeps the table behind a `RwLock` that is a leaf: nothing
//! else is locked while it is held.

use std::alloc::{self, Layout};
use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ptr::NonNull;

use hashbrown::HashTable;

use crate::labels::{Label, Labels, Symbol};

/// Distinct label strings by id, and ids by string.
pub(super) struct SymbolTable {
    /// By id; `None` for a free id.
    syms: Vec<Option<Symbol>>,
    /// By id: labels of live series holding it (0 for a free id).
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Ids, hashed by their string: 4 bytes an entry where a `HashMap<Symbol, u32>`
    /// took 16.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl SymbolTable {
    pub fn new() -> Self {
        SymbolTable {
            syms: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }

    /// The string of a live id.
    ///
    /// # Panics
    /// If `id` is free or was never handed out.
    #[inline(always)]
    pub fn get(&self, id: u32) -> &Symbol {
        self.syms[id as usize].as_ref().expect("live symbol id")
    }

    /// The id of `s` with its count raised by one (made on first sight).
    pub fn acquire(&mut self, s: &str) -> u32 {
        let h = self.hasher.hash_one(s);
        let syms = &self.syms;
        let found = self
            .index
            .find(h, |&id| syms[id as usize].as_deref() == Some(s));
        if let Some(&id) = found {
            let c = &mut self.refs[id as usize];
            *c = c.checked_add(1).expect("symbol count overflow");
            return id;
        }
        let sym = Some(Symbol::new(s));
        let id = match self.free.pop() {
            Some(id) => {
                self.syms[id as usize] = sym;
                self.refs[id as usize] = 1;
                id
            }
            None => {
                let id = u32::try_from(self.syms.len()).expect("more than 2^32 label strings");
                self.syms.push(sym);
                self.refs.push(1);
                id
            }
        };
        let (syms, hasher) = (&self.syms, &self.hasher);
        self.index.insert_unique(h, id, |&i| {
            hasher.hash_one(syms[i as usize].as_deref().expect("indexed id is live"))
        });
        id
    }

    /// Lower `id`'s count by one, dropping its string when no label holds it any more.
    pub fn release(&mut self, id: u32) {
        let c = &mut self.refs[id as usize];
        *c -= 1;
        if *c > 0 {
            return;
        }
        let sym = self.syms[id as usize].take().expect("live symbol id");
        let h = self.hasher.hash_one(sym.as_str());
        if let Ok(e) = self.index.find_entry(h, |&i| i == id) {
            e.remove();
        }
        self.free.push(id);
    }

    /// Ids for `labels`, each count raised by one.
    pub fn acquire_labels(&mut self, labels: &Labels) -> LabelIds {
        let ids: Vec<[u32; 2]> = labels
            .iter()
            .map(|l| [self.acquire(&l.name), self.acquire(&l.value)])
            .collect();
        LabelIds::new(&ids)
    }

    /// Release every id of a removed series' labels.
    pub fn release_labels(&mut self, ids: &LabelIds) {
        ids.pairs().for_each(|[n, v]| {
            self.release(n);
            self.release(v);
        });
    }

    /// The label set `ids` stands for (symbols shared with the table).
    pub fn labels(&self, ids: &LabelIds) -> Labels {
        Labels::from_sorted_unchecked(self.label_vec(ids))
    }

    pub fn label_vec(&self, ids: &LabelIds) -> Vec<Label> {
        // `for_each`, not `collect` (which would call `next`, a width branch a label)
        let mut out = Vec::with_capacity(ids.len());
        ids.pairs().for_each(|[n, v]| {
            out.push(Label {
                name: self.get(n).clone(),
                value: self.get(v).clone(),
            })
        });
        out
    }

    /// Whether `ids` stands for exactly these labels.
    pub fn eq_labels(&self, ids: &LabelIds, labels: &[Label]) -> bool {
        ids.eq_by(labels, |[n, v], l| {
            *self.get(v) == l.value && *self.get(n) == l.name
        })
    }

    /// Live strings.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.syms.len() - self.free.len()
    }

    /// Bytes of the table, without its strings (the postings' keys count those).
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        self.syms.capacity() * (size_of::<Option<Symbol>>() + size_of::<u32>())
            + self.free.capacity() * size_of::<u32>()
            + self.index.capacity() * (size_of::<u32>() + 1)
    }
}

/// A series' labels as (name id, value id) pairs of a [`SymbolTable`], behind one thin
/// pointer. The allocation starts with a `u32` header, the pair count with [`WIDE`] set
/// when the pairs that follow are `[u32; 2]`; else they are `[u16; 2]`, as every id of
/// most sets fits (few heads hold 2^16 strings, and freed ids are reused): 7 labels
/// take 32 bytes instead of 60. Dropping it does not release the ids (the head does,
/// with [`SymbolTable::release_labels`]).
pub(super) struct LabelIds {
    ptr: NonNull<u32>,
}

/// Header bit: the pairs are `[u32; 2]`, not `[u16; 2]`.
const WIDE: u32 = 1 << 31;

/// `$body` with `$it` bound to the slice iterator of either width: one branch, and the
/// body compiled for each width.
macro_rules! with_width {
    ($pairs:expr, $it:ident => $body:expr) => {
        match $pairs {
            Pairs::Narrow($it) => $body,
            Pairs::Wide($it) => $body,
        }
    };
}

#[inline(always)]
fn widen<T: Into<u32>>([n, v]: [T; 2]) -> [u32; 2] {
    [n.into(), v.into()]
}

// SAFETY: the ids are never written after construction (as a `Box<[u32]>`).
unsafe impl Send for LabelIds {}
// SAFETY: as above.
unsafe impl Sync for LabelIds {}

impl LabelIds {
    /// The allocation of a header: a `u32`, then the pairs at offset 4. Aligned as a
    /// `u32`, so the pairs are aligned for `u16`s and `u32`s alike. `new` and `Drop`
    /// both take it from the header.
    fn layout(header: u32) -> Layout {
        let n = (header & !WIDE) as usize;
        let pair = if header & WIDE != 0 {
            std::mem::size_of::<[u32; 2]>()
        } else {
            std::mem::size_of::<[u16; 2]>()
        };
        n.checked_mul(pair)
            .and_then(|b| b.checked_add(std::mem::size_of::<u32>()))
            .and_then(|size| Layout::from_size_align(size, std::mem::align_of::<u32>()).ok())
            .expect("label ids layout")
    }

    pub fn new(pairs: &[[u32; 2]]) -> LabelIds {
        let n = u32::try_from(pairs.len())
            .ok()
            .filter(|&n| n < WIDE)
            .expect("label count fits 31 bits");
        let wide = pairs.iter().fold(0, |m, &[a, b]| m | a | b) > u32::from(u16::MAX);
        let header = if wide { n | WIDE } else { n };
        let layout = Self::layout(header);
        // SAFETY: the layout holds at least the header, so is not zero-sized.
        let raw = unsafe { alloc::alloc(layout) }.cast::<u32>();
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: a fresh u32-aligned allocation of the header and `n` pairs of the
        // width it says, the pairs at offset 4 (aligned for u16 and u32). Narrowing is
        // lossless: no id exceeds `u16::MAX` unless `wide`.
        unsafe {
            raw.write(header);
            if wide {
                std::ptr::copy_nonoverlapping(pairs.as_ptr(), raw.add(1).cast(), pairs.len());
            } else {
                let to = raw.add(1).cast::<[u16; 2]>();
                for (i, &[a, b]) in pairs.iter().enumerate() {
                    to.add(i).write([a as u16, b as u16]);
                }
            }
        }
        LabelIds { ptr }
    }

    #[inline(always)]
    fn header(&self) -> u32 {
        // SAFETY: the header is the allocation's first word, written at construction.
        unsafe { *self.ptr.as_ptr() }
    }

    pub fn len(&self) -> usize {
        (self.header() & !WIDE) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the allocation (as asked of the allocator).
    pub fn heap_bytes(&self) -> usize {
        Self::layout(self.header()).size()
    }

    /// (name id, value id) pairs, sorted by name.
    #[inline(always)]
    pub fn pairs(&self) -> Pairs<'_> {
        let header = self.header();
        let n = (header & !WIDE) as usize;
        // SAFETY: `n` pairs of the width the header says follow it at offset 4 (aligned
        // for u16 and u32: the allocation is u32-aligned), are not written after `new`,
        // and live as long as `self`.
        unsafe {
            let p = self.ptr.as_ptr().add(1);
            if header & WIDE != 0 {
                Pairs::Wide(std::slice::from_raw_parts(p.cast(), n).iter())
            } else {
                Pairs::Narrow(std::slice::from_raw_parts(p.cast(), n).iter())
            }
        }
    }

    /// Whether the pairs and `other` are as long and `eq` holds for each pair and its
    /// counterpart (one branch on the width, then a plain loop).
    #[inline(always)]
    pub fn eq_by<T>(&self, other: &[T], mut eq: impl FnMut([u32; 2], &T) -> bool) -> bool {
        self.len() == other.len()
            && with_width!(self.pairs(), it => it.zip(other).all(|(&p, o)| eq(widen(p), o)))
    }

    /// The value id of the pair whose name id `cmp` orders equal to the name sought
    /// (a binary search: the pairs are sorted by name).
    pub fn value_by_name(&self, mut cmp: impl FnMut(u32) -> Ordering) -> Option<u32> {
        with_width!(self.pairs(), it => {
            let p = it.as_slice();
            let i = p.binary_search_by(|&q| cmp(widen(q)[0])).ok()?;
            Some(widen(p[i])[1])
        })
    }

    /// The allocation's start, for prefetching.
    pub fn as_ptr(&self) -> *const u32 {
        self.ptr.as_ptr()
    }
}

impl Drop for LabelIds {
    fn drop(&mut self) {
        let layout = Self::layout(self.header());
        // SAFETY: allocated in `new` with the layout of this (unchanged) header.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

/// The (name id, value id) pairs of a [`LabelIds`], as `u32`s whichever their stored
/// width. `fold` (so `for_each`) and `all` branch on the width once and then loop over
/// one slice, as the ingest path wants; `next` (a `for` loop, `zip`) branches per pair.
#[derive(Clone)]
pub(super) enum Pairs<'a> {
    Narrow(std::slice::Iter<'a, [u16; 2]>),
    Wide(std::slice::Iter<'a, [u32; 2]>),
}

impl Iterator for Pairs<'_> {
    type Item = [u32; 2];

    #[inline(always)]
    fn next(&mut self) -> Option<[u32; 2]> {
        with_width!(self, it => it.next().map(|&p| widen(p)))
    }

    #[inline(always)]
    fn size_hint(&self) -> (usize, Option<usize>) {
        with_width!(self, it => it.size_hint())
    }

    #[inline(always)]
    fn fold<B, F: FnMut(B, [u32; 2]) -> B>(self, init: B, mut f: F) -> B {
        with_width!(self, it => it.fold(init, |b, &p| f(b, widen(p))))
    }

    #[inline(always)]
    fn all<F: FnMut([u32; 2]) -> bool>(&mut self, mut f: F) -> bool {
        with_width!(self, it => it.all(|&p| f(widen(p))))
    }
}

impl ExactSizeIterator for Pairs<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_shared_freed_and_reused() {
        let mut t = SymbolTable::new();
        let a = t.acquire("job");
        let b = t.acquire("node");
        assert_ne!(a, b);
        assert_eq!(t.acquire("job"), a);
        assert_eq!(t.len(), 2);
        t.release(a);
        assert_eq!(t.get(a).as_str(), "job", "one holder left");
        t.release(a);
        assert_eq!(t.len(), 1);
        // the free id goes to the next new string, and the old string is not found
        let c = t.acquire("instance");
        assert_eq!(c, a);
        assert_eq!(t.get(c).as_str(), "instance");
        assert_eq!(t.acquire("job"), 2);
        assert_eq!(t.acquire("node"), b);
    }

    #[test]
    fn symbols_are_dropped_with_their_last_series() {
        let mut t = SymbolTable::new();
        let x = Labels::from_pairs([("__name__", "up"), ("instance", "a")]);
        let y = Labels::from_pairs([("__name__", "up"), ("instance", "b")]);
        let (ix, iy) = (t.acquire_labels(&x), t.acquire_labels(&y));
        assert_eq!(t.labels(&ix), x);
        assert_eq!(t.labels(&iy), y);
        assert!(t.eq_labels(&ix, x.as_slice()));
        assert!(!t.eq_labels(&ix, y.as_slice()));
        assert_eq!(t.len(), 5);
        // a symbol handed out lives on after the table drops it
        let a = t.labels(&ix).as_slice()[1].value.clone();
        assert_eq!(Symbol::strong_count(&a), 2);
        t.release_labels(&ix);
        assert_eq!(t.len(), 4, "\"a\" dropped, the rest kept for y");
        assert_eq!(Symbol::strong_count(&a), 1);
        assert_eq!(a.as_str(), "a");
        t.release_labels(&iy);
        assert_eq!(t.len(), 0);
        assert_eq!(
            t.memory_bytes(),
            t.syms.capacity() * 12 + t.free.capacity() * 4 + t.index.capacity() * 5
        );
    }

    /// Through the head: a truncated series' strings leave the table unless another
    /// series uses them, and their ids go to the next new strings.
    #[test]
    fn head_truncation_frees_symbols() {
        use super::super::{Head, HeadOptions};
        let h = Head::new(HeadOptions {
            chunk_range_ms: 10_000,
            ..HeadOptions::default()
        });
        let old = Labels::from_pairs([("__name__", "up"), ("instance", "old")]);
        let kept = Labels::from_pairs([("__name__", "up"), ("instance", "kept")]);
        let (ro, _) = h.get_or_create(&old);
        let (rk, _) = h.get_or_create(&kept);
        h.append(ro, 1000, 1.0).unwrap();
        h.append(rk, 9000, 1.0).unwrap();
        assert_eq!(h.symbols.read().unwrap().len(), 5);
        let held = h.series_labels(&[]);
        assert_eq!(held, vec![kept.clone(), old.clone()]);
        assert_eq!(h.truncate(5000), 1);
        let t = h.symbols.read().unwrap();
        assert_eq!(t.len(), 4, "only \"old\" dropped");
        assert_eq!(t.free.len(), 1);
        drop(t);
        // labels handed out before keep their strings
        assert_eq!(held[1], old);
        assert_eq!(h.get(&old), None);
        assert_eq!(h.get(&kept), Some(rk));
        let (rn, created) = h.get_or_create(&Labels::from_pairs([
            ("__name__", "up"),
            ("instance", "new"),
        ]));
        assert!(created);
        let t = h.symbols.read().unwrap();
        assert!(t.free.is_empty(), "the freed id reused");
        assert_eq!(t.len(), 5);
        drop(t);
        assert_eq!(h.series_labels(&[]).len(), 2);
        assert_ne!(rn, ro);
    }

    #[test]
    fn label_ids_round_trip_any_length() {
        for n in [0usize, 1, 7, 40] {
            let narrow: Vec<[u32; 2]> = (0..n as u32).map(|i| [i, i + 100]).collect();
            // any id past u16 makes the whole set wide
            let wide: Vec<[u32; 2]> = (0..n as u32).map(|i| [i, i + 65_536]).collect();
            for (pairs, pair_bytes) in [(narrow, 4), (wide, 8)] {
                let ids = LabelIds::new(&pairs);
                assert_eq!(ids.len(), n);
                assert_eq!(ids.pairs().len(), n);
                assert_eq!(ids.pairs().collect::<Vec<_>>(), pairs);
                let mut folded = Vec::new();
                ids.pairs().for_each(|p| folded.push(p));
                assert_eq!(folded, pairs);
                assert!(ids.eq_by(&pairs, |p, q| p == *q));
                if n > 0 {
                    assert!(!ids.eq_by(&pairs[..n - 1], |p, q| p == *q));
                    assert!(!ids.eq_by(&pairs, |p, q| p != *q));
                }
                // `Drop` frees with this layout, the one `new` allocated with
                assert_eq!(ids.heap_bytes(), 4 + n * pair_bytes, "{n} pairs");
            }
        }
        assert_eq!(std::mem::size_of::<LabelIds>(), 8);
    }

    #[test]
    fn label_ids_width_boundary() {
        let at = LabelIds::new(&[[1, 65_535], [65_535, 2]]);
        assert_eq!(at.heap_bytes(), 12, "u16::MAX still narrow");
        assert_eq!(at.pairs().collect::<Vec<_>>(), [[1, 65_535], [65_535, 2]]);
        let past = LabelIds::new(&[[7, u32::MAX], [65_536, 0]]);
        assert_eq!(past.heap_bytes(), 20);
        assert_eq!(
            past.pairs().collect::<Vec<_>>(),
            [[7, u32::MAX], [65_536, 0]]
        );
        for ids in [&at, &past] {
            let p: Vec<_> = ids.pairs().collect();
            assert_eq!(ids.value_by_name(|n| n.cmp(&p[1][0])), Some(p[1][1]));
            assert_eq!(ids.value_by_name(|n| n.cmp(&p[0][0])), Some(p[0][1]));
            assert_eq!(ids.value_by_name(|n| n.cmp(&3)), None);
            let mut all = ids.pairs();
            assert!(!all.all(|[n, _]| n != p[1][0]), "stops at the second");
        }
    }

    /// Through a table of more than 2^16 strings: a set of low ids stays narrow, one with
    /// a high id is stored wide, and both give back their labels.
    #[test]
    fn label_sets_past_u16_ids() {
        let mut t = SymbolTable::new();
        for i in 0..65_540 {
            t.acquire(&format!("s{i}"));
        }
        let low = Labels::from_pairs([("s1", "s2"), ("s3", "s65535")]);
        let high = Labels::from_pairs([("s1", "s65536"), ("s3", "s2")]);
        let (il, ih) = (t.acquire_labels(&low), t.acquire_labels(&high));
        assert_eq!(il.heap_bytes(), 4 + 2 * 4);
        assert_eq!(ih.heap_bytes(), 4 + 2 * 8);
        for (ids, labels) in [(&il, &low), (&ih, &high)] {
            assert_eq!(ids.len(), 2);
            assert_eq!(t.labels(ids), *labels);
            assert!(t.eq_labels(ids, labels.as_slice()));
        }
        assert!(!t.eq_labels(&il, high.as_slice()));
        assert_eq!(
            ih.pairs().next().map(|[_, v]| t.get(v).as_str()),
            Some("s65536")
        );
        t.release_labels(&ih);
        t.release_labels(&il);
        assert_eq!(
            t.len(),
            65_540,
            "each string still held by its first acquire"
        );
    }
}
