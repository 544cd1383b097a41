//! The head's inverted index: label name → value → sorted series refs, plus the list
//! of every series, with Prometheus's `PostingsForMatchers` semantics and the
//! cardinality statistics of `/api/v1/status/tsdb`.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use crate::labels::{Label, Symbol, METRIC_NAME, SYMBOL_HEADER_BYTES};
use crate::matcher::{MatchOp, Matcher};
use crate::postings::{intersect_many, merge, without};

#[derive(Default)]
pub(super) struct MemPostings {
    m: HashMap<Symbol, HashMap<Symbol, Vec<u64>>>,
    all: Vec<u64>,
}

/// Insert `r` keeping `v` sorted and unique; refs mostly arrive in increasing order.
fn insert_sorted(v: &mut Vec<u64>, r: u64) {
    match v.last() {
        None => {
            // Most label values of a high-cardinality label hold one series.
            v.reserve_exact(1);
            v.push(r);
        }
        Some(&last) if last < r => v.push(r),
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
        for l in labels {
            let values = self.m.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), r);
        }
        insert_sorted(&mut self.all, r);
    }

    /// Remove series in bulk; `removed` holds (ref, labels), any order.
    pub fn remove<'a>(&mut self, removed: impl IntoIterator<Item = (u64, &'a [Label])>) {
        let mut by_pair: HashMap<(&Symbol, &Symbol), Vec<u64>> = HashMap::new();
        let mut refs = Vec::new();
        for (r, labels) in removed {
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

    pub fn get(&self, name: &str, value: &str) -> &[u64] {
        self.m
            .get(name)
            .and_then(|v| v.get(value))
            .map_or(&[], |l| l.as_slice())
    }

    fn union_of_values<'a>(&'a self, name: &str, values: &[&str]) -> Cow<'a, [u64]> {
        let lists: Vec<&[u64]> = values
            .iter()
            .map(|v| self.get(name, v))
            .filter(|l| !l.is_empty())
            .collect();
        union(lists)
    }

    /// The union of the lists of the values of `name` that `pred` accepts. When it
    /// accepts every value of a label every series carries (`{__name__=~".+"}`), that
    /// is the all-series list, borrowed instead of merging one list per value.
    fn union_matching<'a>(&'a self, name: &str, pred: impl Fn(&str) -> bool) -> Cow<'a, [u64]> {
        let Some(values) = self.m.get(name) else {
            return Cow::Borrowed(&[]);
        };
        let lists: Vec<&[u64]> = values
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

    /// The refs of series satisfying every matcher, sorted; the same semantics as
    /// [`crate::postings::postings_for_matchers`] (a matcher accepting `""` also
    /// selects series lacking its label; no matchers select everything).
    pub fn for_matchers(&self, matchers: &[Matcher]) -> Vec<u64> {
        let mut its: Vec<Cow<'_, [u64]>> = Vec::new();
        let mut nots: Vec<Cow<'_, [u64]>> = Vec::new();
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
                    return Vec::new();
                }
                let p = match m.set_matches() {
                    Some(vals) => self.union_of_values(&m.name, &vals),
                    None => self.union_matching(&m.name, |v| m.matches(v)),
                };
                if p.is_empty() {
                    return Vec::new();
                }
                its.push(p);
            }
        }
        let mut base = match its.len() {
            0 => self.all.clone(),
            1 => its.pop().expect("one list").into_owned(),
            _ => intersect_many(&its),
        };
        if !nots.is_empty() && !base.is_empty() {
            let n = union(nots.iter().map(|c| &**c).collect());
            base = without(&base, &n);
        }
        base
    }

    pub fn label_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.m.keys().map(|k| k.to_string()).collect();
        v.sort_unstable();
        v
    }

    pub fn label_values(&self, name: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .m
            .get(name)
            .map(|vals| vals.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Prometheus's `MemPostings.Stats`: the top `limit` of each statistic.
    pub fn stats(&self, limit: usize) -> PostingsStats {
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

    /// Bytes held: hash tables, postings lists and the label strings they key on.
    pub fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        let entry = size_of::<Symbol>() + size_of::<Vec<u64>>() + 1;
        let outer_entry = size_of::<Symbol>() + size_of::<HashMap<Symbol, Vec<u64>>>() + 1;
        let mut total = self.all.capacity() * 8 + self.m.capacity() * outer_entry;
        for (name, values) in &self.m {
            total += SYMBOL_HEADER_BYTES + name.len();
            total += values.capacity() * entry;
            for (value, list) in values {
                // the interned string (header + bytes) and the list
                total += SYMBOL_HEADER_BYTES + value.len() + list.capacity() * 8;
            }
        }
        total
    }
}

/// The union of sorted lists, borrowing when there is only one.
fn union(mut lists: Vec<&[u64]>) -> Cow<'_, [u64]> {
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
