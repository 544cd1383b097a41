//! The head's symbol table and its series' label sets as symbol ids.
//!
//! Each distinct label string is kept once under a `u32` id ([`SymbolTable`]), so a
//! series' labels are (name id, value id) pairs behind one thin pointer
//! ([`LabelIds`]): 8 bytes a label instead of two 8-byte [`Symbol`] pointers, and an
//! 8-byte field in the series instead of a 16-byte boxed slice.
//!
//! An id counts the labels of live series that use it, and its symbol is dropped (the
//! id reused) when the last of them is removed. Counting per id rather than sweeping
//! every series at truncation (Prometheus's symbol rebuild) keeps a truncation's cost
//! in proportion to the series it removes, and frees strings at once.
//!
//! Lock order: the head keeps the table behind a `RwLock` that is a leaf: nothing
//! else is locked while it is held.

use std::alloc::{self, Layout};
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
        for &[n, v] in ids.pairs() {
            self.release(n);
            self.release(v);
        }
    }

    /// The label set `ids` stands for (symbols shared with the table).
    pub fn labels(&self, ids: &LabelIds) -> Labels {
        Labels::from_sorted_unchecked(self.label_vec(ids))
    }

    pub fn label_vec(&self, ids: &LabelIds) -> Vec<Label> {
        ids.pairs()
            .iter()
            .map(|&[n, v]| Label {
                name: self.get(n).clone(),
                value: self.get(v).clone(),
            })
            .collect()
    }

    /// Whether `ids` stands for exactly these labels.
    pub fn eq_labels(&self, ids: &LabelIds, labels: &[Label]) -> bool {
        let p = ids.pairs();
        p.len() == labels.len()
            && p.iter()
                .zip(labels)
                .all(|(&[n, v], l)| *self.get(v) == l.value && *self.get(n) == l.name)
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
/// pointer: the allocation starts with the pair count. Dropping it does not release
/// the ids (the head does, with [`SymbolTable::release_labels`]).
pub(super) struct LabelIds {
    ptr: NonNull<u32>,
}

// SAFETY: the ids are never written after construction (as a `Box<[u32]>`).
unsafe impl Send for LabelIds {}
// SAFETY: as above.
unsafe impl Sync for LabelIds {}

impl LabelIds {
    fn layout(pairs: usize) -> Layout {
        Layout::array::<u32>(1 + 2 * pairs).expect("label ids layout")
    }

    pub fn new(pairs: &[[u32; 2]]) -> LabelIds {
        let n = u32::try_from(pairs.len()).expect("label count fits u32");
        let layout = Self::layout(pairs.len());
        // SAFETY: the layout holds at least the count, so is not zero-sized.
        let raw = unsafe { alloc::alloc(layout) }.cast::<u32>();
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: a fresh allocation of 1 + 2 * n u32s; the pairs follow the count.
        unsafe {
            raw.write(n);
            std::ptr::copy_nonoverlapping(
                pairs.as_ptr().cast::<u32>(),
                raw.add(1),
                2 * pairs.len(),
            );
        }
        LabelIds { ptr }
    }

    pub fn len(&self) -> usize {
        // SAFETY: the count is the allocation's first word, written at construction.
        unsafe { *self.ptr.as_ptr() as usize }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (name id, value id) pairs, sorted by name.
    #[inline(always)]
    pub fn pairs(&self) -> &[[u32; 2]] {
        // SAFETY: `len()` pairs (u32-aligned, as `[u32; 2]` needs) follow the count and
        // live as long as `self`.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(1).cast::<[u32; 2]>(), self.len())
        }
    }

    /// The allocation's start, for prefetching.
    pub fn as_ptr(&self) -> *const u32 {
        self.ptr.as_ptr()
    }
}

impl Drop for LabelIds {
    fn drop(&mut self) {
        let layout = Self::layout(self.len());
        // SAFETY: allocated in `new` with this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast::<u8>(), layout) }
    }
}

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
            let pairs: Vec<[u32; 2]> = (0..n as u32).map(|i| [i, i + 100]).collect();
            let ids = LabelIds::new(&pairs);
            assert_eq!(ids.len(), n);
            assert_eq!(ids.pairs(), &pairs[..]);
        }
        assert_eq!(std::mem::size_of::<LabelIds>(), 8);
    }
}
