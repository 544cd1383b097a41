//! The head's inverted index: label name → value → sorted series refs, plus the list
//! of every series, with Prometheus's `PostingsForMatchers` semantics and the
//! cardinality statistics of `/api/v1/status/tsdb`.
//!
//! Refs are handed out sequentially from 1, so they fit in `u32` for any real head;
//! while they do the lists hold `u32` (half the bytes of the index's largest part). The
//! first ref past `u32::MAX` widens the whole index to `u64` once, so the set algebra
//! runs monomorphised on one element type, with no per-element branch.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::labels::{Label, Symbol, METRIC_NAME, SYMBOL_HEADER_BYTES};
use crate::matcher::{MatchOp, Matcher};
use crate::postings::{intersect_many, merge, without};

/// A postings list's element: `u32` while every ref fits, else `u64`.
trait Ref: Copy + Ord + Into<u64> + TryFrom<u64> {}
impl Ref for u32 {}
impl Ref for u64 {}

pub(super) struct MemPostings {
    idx: Index,
}

enum Index {
    Small(Lists<u32>),
    Large(Lists<u64>),
}

impl Default for MemPostings {
    fn default() -> Self {
        MemPostings {
            idx: Index::Small(Lists::default()),
        }
    }
}

/// Run `$body` with `$l` bound to the index's lists, whichever their element type.
macro_rules! each {
    ($idx:expr, $l:ident => $body:expr) => {
        match $idx {
            Index::Small($l) => $body,
            Index::Large($l) => $body,
        }
    };
}

struct Lists<T> {
    m: HashMap<Symbol, HashMap<Symbol, Vec<T>>>,
    all: Vec<T>,
}

impl<T> Default for Lists<T> {
    fn default() -> Self {
        Lists {
            m: HashMap::new(),
            all: Vec::new(),
        }
    }
}

/// Insert `r` keeping `v` sorted and unique; refs mostly arrive in increasing order.
fn insert_sorted<T: Ref>(v: &mut Vec<T>, r: T) {
    match v.last() {
        None => {
            // Most label values of a high-cardinality label hold one series.
            v.reserve_exact(1);
            v.push(r);
        }
        Some(&last) if last < r => {
            if v.len() == v.capacity() {
                // Grow by half rather than double: lists only grow by append, and a
                // 2-hour head's lists sit at their final length; 1.5x leaves a third
                // less unused capacity on average than doubling.
                v.reserve_exact((v.len() / 2).max(1));
            }
            v.push(r)
        }
        _ => {
            if let Err(i) = v.binary_search(&r) {
                v.insert(i, r);
            }
        }
    }
}

/// Regex metacharacters; a pattern without them (but `|`) is a set of literals.
const REGEX_META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$',
];

impl MemPostings {
    pub fn add(&mut self, r: u64, labels: &[Label]) {
        match (&mut self.idx, u32::try_from(r)) {
            (Index::Small(l), Ok(r)) => l.add(r, labels),
            (Index::Small(_), Err(_)) => {
                self.widen();
                self.add(r, labels);
            }
            (Index::Large(l), _) => l.add(r, labels),
        }
    }

    /// Switch to `u64` lists: a ref past `u32::MAX` arrived (once in a head's life).
    fn widen(&mut self) {
        let Index::Small(small) = &mut self.idx else {
            return;
        };
        let small = std::mem::take(small);
        let w = |v: Vec<u32>| v.into_iter().map(u64::from).collect::<Vec<u64>>();
        self.idx = Index::Large(Lists {
            m: small
                .m
                .into_iter()
                .map(|(n, vals)| (n, vals.into_iter().map(|(v, l)| (v, w(l))).collect()))
                .collect(),
            all: w(small.all),
        });
    }

    /// Remove series in bulk; `removed` holds (ref, labels), any order.
    pub fn remove<'a>(&mut self, removed: impl IntoIterator<Item = (u64, &'a [Label])>) {
        each!(&mut self.idx, l => l.remove(removed))
    }

    /// How many series hold `name="value"`.
    pub fn count(&self, name: &str, value: &str) -> usize {
        each!(&self.idx, l => l.get(name, value).len())
    }

    /// The refs of series satisfying every matcher, sorted; the same semantics as
    /// [`crate::postings::postings_for_matchers`] (a matcher accepting `""` also
    /// selects series lacking its label; no matchers select everything).
    pub fn for_matchers(&self, matchers: &[Matcher]) -> Vec<u64> {
        match &self.idx {
            Index::Small(l) => l.for_matchers(matchers).iter().map(|&r| r.into()).collect(),
            Index::Large(l) => l.for_matchers(matchers).into_owned(),
        }
    }

    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = each!(&self.idx, l => l.m.keys().map(|k| k.to_string()).collect());
        v.sort_unstable();
        v
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = each!(&self.idx, l => l
            .m
            .get(name)
            .map(|vals| vals.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default());
        v.sort_unstable();
        v
    }

    /// Prometheus's `MemPostings.Stats`: the top `limit` of each statistic.
    pub fn stats(&self, limit: usize) -> PostingsStats {
        each!(&self.idx, l => l.stats(limit))
    }

    /// Bytes held: hash tables, postings lists and the label strings they key on.
    pub fn memory_bytes(&self) -> usize {
        each!(&self.idx, l => l.memory_bytes())
    }
}

impl<T: Ref> Lists<T> {
    fn add(&mut self, r: T, labels: &[Label]) {
        for l in labels {
            let values = self.m.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), r);
        }
        insert_sorted(&mut self.all, r);
    }

    fn remove<'a>(&mut self, removed: impl IntoIterator<Item = (u64, &'a [Label])>) {
        let mut by_pair: HashMap<(&Symbol, &Symbol), Vec<T>> = HashMap::new();
        let mut refs = Vec::new();
        for (r, labels) in removed {
            // A ref that does not fit `T` was never added to these lists.
            let Ok(r) = T::try_from(r) else {
                continue;
            };
            refs.push(r);
            for l in labels {
                by_pair.entry((&l.name, &l.value)).or_default().push(r);
            }
        }
        if refs.is_empty() {
            return;
        }
        refs.sort_unstable();
        self.all = without(&self.all, &refs);
        for ((name, value), mut rs) in by_pair {
            rs.sort_unstable();
            let Some(values) = self.m.get_mut(&**name) else {
                continue;
            };
            if let Some(list) = values.get_mut(&**value) {
                let mut rest = without(list, &rs);
                if rest.is_empty() {
                    values.remove(&**value);
                } else {
                    rest.shrink_to_fit();
                    *list = rest;
                }
            }
            if values.is_empty() {
                self.m.remove(&**name);
            }
        }
    }

    fn get(&self, name: &str, value: &str) -> &[T] {
        self.m
            .get(name)
            .and_then(|v| v.get(value))
            .map_or(&[], |l| l.as_slice())
    }

    fn union_of_values<'a>(&'a self, name: &str, values: &[&str]) -> Cow<'a, [T]> {
        let lists: Vec<&[T]> = values
            .iter()
            .map(|v| self.get(name, v))
            .filter(|l| !l.is_empty())
            .collect();
        union(lists)
    }

    /// The union of the lists of the values of `name` that `pred` accepts. When it
    /// accepts every value of a label every series carries (`{__name__=~".+"}`), that
    /// is the all-series list, borrowed instead of merging one list per value.
    fn union_matching<'a>(&'a self, name: &str, pred: impl Fn(&str) -> bool) -> Cow<'a, [T]> {
        let Some(values) = self.m.get(name) else {
            return Cow::Borrowed(&[]);
        };
        let lists: Vec<&[T]> = values
            .iter()
            .filter(|(v, _)| pred(v))
            .map(|(_, l)| l.as_slice())
            .collect();
        // A series holds a label once: the lists are disjoint, so equal sizes mean
        // the union is every series.
        if lists.len() == values.len()
            && lists.iter().map(|l| l.len()).sum::<usize>() == self.all.len()
        {
            return Cow::Borrowed(&self.all);
        }
        union(lists)
    }

    /// Borrowed when one list is the answer, so it is copied (and widened) once.
    fn for_matchers(&self, matchers: &[Matcher]) -> Cow<'_, [T]> {
        let mut its: Vec<Cow<'_, [T]>> = Vec::new();
        let mut nots: Vec<Cow<'_, [T]>> = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                if m.op == MatchOp::RegexMatch && m.value == ".*" {
                    continue;
                }
                let p = if m.op == MatchOp::NotEqual {
                    Cow::Borrowed(self.get(&m.name, &m.value))
                } else if m.op == MatchOp::RegexNoMatch && !m.value.contains(REGEX_META) {
                    let vals: Vec<&str> = m.value.split('|').filter(|v| !v.is_empty()).collect();
                    self.union_of_values(&m.name, &vals)
                } else {
                    self.union_matching(&m.name, |v| !m.matches(v))
                };
                if !p.is_empty() {
                    nots.push(p);
                }
            } else {
                if m.op == MatchOp::RegexNoMatch && m.value == ".*" {
                    return Cow::Borrowed(&[]);
                }
                let p = match m.set_matches() {
                    Some(vals) => self.union_of_values(&m.name, &vals),
                    None => self.union_matching(&m.name, |v| m.matches(v)),
                };
                if p.is_empty() {
                    return Cow::Borrowed(&[]);
                }
                its.push(p);
            }
        }
        let base = match its.len() {
            0 => Cow::Borrowed(&self.all[..]),
            1 => its.pop().expect("one list"),
            _ => Cow::Owned(intersect_many(&its)),
        };
        if !nots.is_empty() && !base.is_empty() {
            let n = union(nots.iter().map(|c| &**c).collect());
            return Cow::Owned(without(&base, &n));
        }
        base
    }

    fn stats(&self, limit: usize) -> PostingsStats {
        let mut metrics = TopK::new(limit);
        let mut value_counts = TopK::new(limit);
        let mut sizes = TopK::new(limit);
        let mut pairs: TopK<(&str, &str)> = TopK::new(limit);
        let mut num_label_pairs = 0u64;
        for (name, values) in &self.m {
            value_counts.push(values.len() as u64, &**name);
            let mut size = 0u64;
            for (value, list) in values {
                let n = list.len() as u64;
                if &**name == METRIC_NAME {
                    metrics.push(n, &**value);
                }
                pairs.push(n, (&**name, &**value));
                size += value.len() as u64 * n;
                num_label_pairs += 1;
            }
            sizes.push(size, &**name);
        }
        let s = |v: Vec<(u64, &str)>| v.into_iter().map(|(c, n)| (n.to_owned(), c)).collect();
        PostingsStats {
            num_label_pairs,
            series_count_by_metric_name: s(metrics.into_sorted()),
            label_value_count_by_label_name: s(value_counts.into_sorted()),
            memory_in_bytes_by_label_name: s(sizes.into_sorted()),
            series_count_by_label_value_pair: pairs
                .into_sorted()
                .into_iter()
                .map(|(c, (n, v))| (format!("{n}={v}"), c))
                .collect(),
        }
    }

    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let elem = size_of::<T>();
        let entry = size_of::<Symbol>() + size_of::<Vec<T>>() + 1;
        let outer_entry = size_of::<Symbol>() + size_of::<HashMap<Symbol, Vec<T>>>() + 1;
        let mut total = self.all.capacity() * elem + self.m.capacity() * outer_entry;
        for (name, values) in &self.m {
            total += SYMBOL_HEADER_BYTES + name.len();
            total += values.capacity() * entry;
            for (value, list) in values {
                // the interned string (header + bytes) and the list
                total += SYMBOL_HEADER_BYTES + value.len() + list.capacity() * elem;
            }
        }
        total
    }
}

/// The union of sorted lists, borrowing when there is only one.
fn union<T: Copy + Ord>(mut lists: Vec<&[T]>) -> Cow<'_, [T]> {
    match lists.len() {
        0 => Cow::Borrowed(&[]),
        1 => Cow::Borrowed(lists.pop().expect("one list")),
        _ => Cow::Owned(merge(&lists)),
    }
}

pub(super) struct PostingsStats {
    pub num_label_pairs: u64,
    pub series_count_by_metric_name: Vec<(String, u64)>,
    pub label_value_count_by_label_name: Vec<(String, u64)>,
    pub memory_in_bytes_by_label_name: Vec<(String, u64)>,
    pub series_count_by_label_value_pair: Vec<(String, u64)>,
}

/// The `k` largest counts; ties go to the smaller name, so results are deterministic.
struct TopK<N: Ord> {
    k: usize,
    heap: BinaryHeap<Reverse<(u64, Reverse<N>)>>,
}

impl<N: Ord> TopK<N> {
    fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(1024) + 1),
        }
    }

    fn push(&mut self, count: u64, name: N) {
        if self.k == 0 {
            return;
        }
        let item = Reverse((count, Reverse(name)));
        if self.heap.len() < self.k {
            self.heap.push(item);
        } else if let Some(mut min) = self.heap.peek_mut() {
            // `min` is the worst kept; replace it when the new one ranks higher.
            if item < *min {
                *min = item;
            }
        }
    }

    /// Best first.
    fn into_sorted(self) -> Vec<(u64, N)> {
        // ascending order of Reverse = best first
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse((c, Reverse(n)))| (c, n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = (1 << 32) + 7;
    const BIGGER: u64 = u64::MAX - 1;

    fn ls(pairs: &[(&str, &str)]) -> Vec<Label> {
        pairs.iter().map(|&(n, v)| Label::new(n, v)).collect()
    }

    fn m(op: MatchOp, name: &str, value: &str) -> Matcher {
        Matcher::new(op, name, value).unwrap()
    }

    fn up() -> Matcher {
        m(MatchOp::Equal, METRIC_NAME, "up")
    }

    /// A ref past `u32::MAX` widens the index; queries then intersect, merge and
    /// subtract lists holding refs on both sides of 2^32, in order.
    #[test]
    fn refs_past_u32_widen_the_index() {
        let mut p = MemPostings::default();
        let s1 = ls(&[(METRIC_NAME, "up"), ("job", "a"), ("code", "200")]);
        let s2 = ls(&[(METRIC_NAME, "up"), ("job", "b"), ("code", "500")]);
        let s3 = ls(&[(METRIC_NAME, "down"), ("job", "a")]);
        p.add(1, &s1);
        p.add(2, &s2);
        p.add(3, &s3);
        assert!(matches!(p.idx, Index::Small(_)));
        assert_eq!(p.for_matchers(&[up()]), vec![1, 2]);

        let big = ls(&[(METRIC_NAME, "up"), ("job", "a"), ("code", "200")]);
        let bigger = ls(&[(METRIC_NAME, "down"), ("job", "b"), ("code", "500")]);
        let s4 = ls(&[(METRIC_NAME, "up"), ("job", "b")]);
        p.add(BIG, &big);
        assert!(matches!(p.idx, Index::Large(_)));
        p.add(BIGGER, &bigger);
        // a small ref after the big ones still lands in order
        p.add(4, &s4);

        assert_eq!(p.for_matchers(&[up()]), vec![1, 2, 4, BIG]);
        assert_eq!(
            p.for_matchers(&[up(), m(MatchOp::Equal, "job", "a")]),
            vec![1, BIG]
        );
        assert_eq!(
            p.for_matchers(&[
                m(MatchOp::RegexMatch, "job", "a|b"),
                m(MatchOp::Equal, "code", "500")
            ]),
            vec![2, BIGGER]
        );
        assert_eq!(
            p.for_matchers(&[m(MatchOp::RegexMatch, "code", "2.*|5.*")]),
            vec![1, 2, BIG, BIGGER]
        );
        // series 4 lacks `code`, so `code!="200"` selects it
        assert_eq!(
            p.for_matchers(&[up(), m(MatchOp::NotEqual, "code", "200")]),
            vec![2, 4]
        );
        assert_eq!(
            p.for_matchers(&[m(MatchOp::RegexNoMatch, "job", "b")]),
            vec![1, 3, BIG]
        );
        assert_eq!(p.for_matchers(&[]), vec![1, 2, 3, 4, BIG, BIGGER]);
        assert_eq!(p.count(METRIC_NAME, "up"), 4);
        assert_eq!(p.label_values("job"), vec!["a", "b"]);
        assert_eq!(p.stats(10).num_label_pairs, 6);

        p.remove([(BIG, &big[..]), (2, &s2[..])]);
        assert_eq!(p.for_matchers(&[up()]), vec![1, 4]);
        assert_eq!(p.for_matchers(&[]), vec![1, 3, 4, BIGGER]);
        assert_eq!(p.count("code", "200"), 1);
        p.remove([(BIGGER, &bigger[..])]);
        assert_eq!(p.label_values("code"), vec!["200"]);
    }

    /// Removing a ref the `u32` lists cannot hold leaves them as they were.
    #[test]
    fn removing_an_unknown_big_ref_keeps_small_lists() {
        let mut p = MemPostings::default();
        let s = ls(&[(METRIC_NAME, "up")]);
        p.add(1, &s);
        p.remove([(BIG, &s[..])]);
        assert!(matches!(p.idx, Index::Small(_)));
        assert_eq!(p.for_matchers(&[up()]), vec![1]);
    }

    /// Lists grow by half, not by doubling, and stay sorted with out-of-order refs.
    #[test]
    fn lists_grow_by_half() {
        let mut v: Vec<u32> = Vec::new();
        for r in 1..=1000 {
            insert_sorted(&mut v, r);
            // doubling would leave 511 unused slots at 513 elements
            assert!(
                v.capacity() <= v.len() * 3 / 2 + 1,
                "{}/{}",
                v.len(),
                v.capacity()
            );
        }
        insert_sorted(&mut v, 0);
        insert_sorted(&mut v, 500);
        assert_eq!(v, (0..=1000).collect::<Vec<u32>>());
    }
}
