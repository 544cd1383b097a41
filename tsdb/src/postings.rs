//! Sorted postings lists (series references: `u64`, or `u32` in the head while every
//! ref fits) and the set algebra queries need:
//! [`intersect`], [`merge`] (union) and [`without`] (difference), plus
//! [`postings_for_matchers`] with Prometheus's `PostingsForMatchers` semantics.
//!
//! Every list is strictly increasing. When one side is much shorter than the other the
//! operations gallop (exponential then binary search) through the longer side instead of
//! scanning it, so `{__name__="rare", job="huge"}` costs about `rare · log(huge)`.

use crate::error::Result;
use crate::index::{IndexReader, RawPostings};
use crate::matcher::{MatchOp, Matcher};

/// Above this length ratio the shorter list gallops through the longer one.
const GALLOP_RATIO: usize = 16;

/// The first index `>= lo` whose value is `>= x` (or `s.len()`).
#[inline]
fn gallop<T: Copy + Ord>(s: &[T], mut lo: usize, x: T) -> usize {
    let n = s.len();
    if lo >= n || s[lo] >= x {
        return lo;
    }
    // Invariant: s[lo] < x.
    let mut step = 1usize;
    let mut hi = lo + 1;
    while hi < n && s[hi] < x {
        lo = hi;
        step <<= 1;
        hi = lo.saturating_add(step);
    }
    let hi = hi.min(n);
    lo + 1 + s[lo + 1..hi].partition_point(|&v| v < x)
}

/// Append `a ∩ b` to `out`.
pub fn intersect_into<T: Copy + Ord>(a: &[T], b: &[T], out: &mut Vec<T>) {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    if small.is_empty() {
        return;
    }
    if large.len() / small.len() >= GALLOP_RATIO {
        let mut j = 0;
        for &x in small {
            j = gallop(large, j, x);
            if j == large.len() {
                break;
            }
            if large[j] == x {
                out.push(x);
                j += 1;
            }
        }
        return;
    }
    let (mut i, mut j) = (0, 0);
    while i < small.len() && j < large.len() {
        let (x, y) = (small[i], large[j]);
        if x == y {
            out.push(x);
        }
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
}

/// `a ∩ b`.
pub fn intersect<T: Copy + Ord>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    intersect_into(a, b, &mut out);
    out
}

/// `acc ∩= other`, in place (no allocation).
pub fn intersect_in_place<T: Copy + Ord>(acc: &mut Vec<T>, other: &[T]) {
    let mut k = 0;
    if other.len() / acc.len().max(1) >= GALLOP_RATIO {
        let mut j = 0;
        for i in 0..acc.len() {
            let x = acc[i];
            j = gallop(other, j, x);
            if j == other.len() {
                break;
            }
            if other[j] == x {
                acc[k] = x;
                k += 1;
                j += 1;
            }
        }
    } else if acc.len() / other.len().max(1) >= GALLOP_RATIO {
        let mut i = 0;
        for &y in other {
            i = gallop(acc, i, y);
            if i == acc.len() {
                break;
            }
            if acc[i] == y {
                acc[k] = y;
                k += 1;
                i += 1;
            }
        }
    } else {
        let (mut i, mut j) = (0, 0);
        while i < acc.len() && j < other.len() {
            let (x, y) = (acc[i], other[j]);
            if x == y {
                acc[k] = x;
                k += 1;
            }
            i += usize::from(x <= y);
            j += usize::from(y <= x);
        }
    }
    acc.truncate(k);
}

/// The intersection of all `lists` (empty for no lists), shortest lists first.
pub fn intersect_many<T: Copy + Ord, L: AsRef<[T]>>(lists: &[L]) -> Vec<T> {
    let mut ls: Vec<&[T]> = lists.iter().map(AsRef::as_ref).collect();
    ls.sort_unstable_by_key(|l| l.len());
    match ls.len() {
        0 => Vec::new(),
        1 => ls[0].to_vec(),
        _ => {
            let mut acc = intersect(ls[0], ls[1]);
            for l in &ls[2..] {
                if acc.is_empty() {
                    break;
                }
                intersect_in_place(&mut acc, l);
            }
            acc
        }
    }
}

fn union2<T: Copy + Ord>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        out.push(x.min(y));
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

/// The union of `lists`, duplicates removed. A k-way merge done as a balanced tree of
/// two-way merges (`log2 k` sequential passes, 3–4× faster than a binary heap here); past
/// 64 lists (a regex over many values) concatenating and sorting is faster still.
pub fn merge<T: Copy + Ord, L: AsRef<[T]>>(lists: &[L]) -> Vec<T> {
    let ls: Vec<&[T]> = lists
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| !l.is_empty())
        .collect();
    match ls.len() {
        0 => Vec::new(),
        1 => ls[0].to_vec(),
        2 => union2(ls[0], ls[1]),
        k if k > 64 => {
            let mut all: Vec<T> = Vec::with_capacity(ls.iter().map(|l| l.len()).sum());
            for l in &ls {
                all.extend_from_slice(l);
            }
            all.sort_unstable();
            all.dedup();
            all
        }
        _ => {
            let mut level: Vec<Vec<T>> = ls
                .chunks(2)
                .map(|p| match p {
                    [a, b] => union2(a, b),
                    [a] => a.to_vec(),
                    _ => unreachable!("chunks(2)"),
                })
                .collect();
            while level.len() > 1 {
                let mut next = Vec::with_capacity(level.len().div_ceil(2));
                let mut it = level.into_iter();
                while let Some(a) = it.next() {
                    match it.next() {
                        Some(b) => next.push(union2(&a, &b)),
                        None => next.push(a),
                    }
                }
                level = next;
            }
            level.pop().unwrap_or_default()
        }
    }
}

/// `a \ b`: the elements of `a` not in `b`.
pub fn without<T: Copy + Ord>(a: &[T], b: &[T]) -> Vec<T> {
    let mut out = Vec::with_capacity(a.len());
    if b.is_empty() {
        out.extend_from_slice(a);
        return out;
    }
    if b.len() / a.len().max(1) >= GALLOP_RATIO {
        let mut j = 0;
        for (i, &x) in a.iter().enumerate() {
            j = gallop(b, j, x);
            if j == b.len() {
                out.extend_from_slice(&a[i..]);
                break;
            }
            if b[j] != x {
                out.push(x);
            }
        }
        return out;
    }
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        if x < y {
            out.push(x);
        }
        i += usize::from(x <= y);
        j += usize::from(y <= x);
    }
    out.extend_from_slice(&a[i..]);
    out
}

/// Regex metacharacters; a pattern without them (but `|`) is a set of literals.
const REGEX_META: &[char] = &[
    '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '^', '$',
];

/// For `l!~"a|b"`: the literal values whose series must be removed.
fn negated_set(m: &Matcher) -> Option<Vec<&str>> {
    if m.op != MatchOp::RegexNoMatch || m.value.contains(REGEX_META) {
        return None;
    }
    Some(m.value.split('|').filter(|v| !v.is_empty()).collect())
}

/// The series references of `ir` that satisfy every matcher, sorted.
///
/// Prometheus semantics: a matcher applies to the empty string for series lacking its
/// label, so one that matches `""` (`l=""`, `l!="x"`, `l!~"x.*"`, `l=~"x|"`) also
/// selects series without `l`; those matchers are applied by subtracting the series
/// whose value of `l` does *not* match. With only such matchers the base set is every
/// series. With no matchers at all, every series is returned.
pub fn postings_for_matchers(ir: &IndexReader, matchers: &[Matcher]) -> Result<Vec<u64>> {
    let mut its: Vec<Vec<u64>> = Vec::new();
    // Lists of single values (`l="v"`), searched in place rather than decoded.
    let mut raws: Vec<RawPostings<'_>> = Vec::new();
    let mut nots: Vec<Vec<u64>> = Vec::new();
    for m in matchers {
        if m.matches_empty() {
            if m.op == MatchOp::RegexMatch && m.value == ".*" {
                continue; // matches everything
            }
            let p = if m.op == MatchOp::NotEqual {
                ir.postings(&m.name, &m.value)?
            } else if let Some(vals) = negated_set(m) {
                ir.postings_for_values(&m.name, &vals)?
            } else {
                ir.postings_matching(&m.name, |v| !m.matches(v))?
            };
            if !p.is_empty() {
                nots.push(p);
            }
        } else {
            if m.op == MatchOp::RegexNoMatch && m.value == ".*" {
                return Ok(Vec::new());
            }
            let p = match m.set_matches() {
                Some(vals) if vals.len() == 1 => match ir.postings_raw(&m.name, vals[0])? {
                    Some(r) if !r.is_empty() => {
                        raws.push(r);
                        continue;
                    }
                    _ => return Ok(Vec::new()),
                },
                Some(vals) => ir.postings_for_values(&m.name, &vals)?,
                None => ir.postings_matching(&m.name, |v| m.matches(v))?,
            };
            if p.is_empty() {
                return Ok(Vec::new());
            }
            its.push(p);
        }
    }
    raws.sort_by_key(|r| r.len());
    let mut raws = raws.into_iter();
    let mut base = if !its.is_empty() {
        intersect_many(&its)
    } else if let Some(smallest) = raws.next() {
        ir.decode_postings(smallest)?
    } else {
        ir.all_postings()?
    };
    // Each remaining list is searched for the (fewer, ascending) survivors.
    for r in raws {
        if base.is_empty() {
            break;
        }
        let mut at = 0;
        base.retain(|&x| {
            at = r.seek(at, x);
            at < r.len() && r.get(at) == x
        });
    }
    if !nots.is_empty() && !base.is_empty() {
        let n = merge(&nots);
        base = without(&base, &n);
    }
    Ok(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::tests::build_index;
    use crate::labels::Labels;
    use bytes::Bytes;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn sorted_set() -> impl Strategy<Value = Vec<u64>> {
        proptest::collection::btree_set(0u64..2000, 0..300).prop_map(|s| s.into_iter().collect())
    }

    /// Lists of very different sizes so the galloping paths run.
    fn skewed() -> impl Strategy<Value = (Vec<u64>, Vec<u64>)> {
        (
            proptest::collection::btree_set(0u64..5000, 0..8),
            proptest::collection::btree_set(0u64..5000, 100..1500),
        )
            .prop_map(|(a, b)| (a.into_iter().collect(), b.into_iter().collect()))
    }

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    proptest! {
        #[test]
        fn set_ops_match_btreeset(a in sorted_set(), b in sorted_set(), c in sorted_set()) {
            let (sa, sb, sc) = (set(&a), set(&b), set(&c));
            let want: Vec<u64> = sa.intersection(&sb).copied().collect();
            prop_assert_eq!(intersect(&a, &b), want.clone());
            let mut acc = a.clone();
            intersect_in_place(&mut acc, &b);
            prop_assert_eq!(acc, want);
            let want3: Vec<u64> = sa.iter().filter(|x| sb.contains(x) && sc.contains(x)).copied().collect();
            prop_assert_eq!(intersect_many(&[&a, &b, &c]), want3);
            let u: Vec<u64> = sa.union(&sb).chain(sc.iter()).copied().collect::<BTreeSet<_>>().into_iter().collect();
            prop_assert_eq!(merge(&[&a, &b, &c]), u);
            prop_assert_eq!(merge(&[&a, &b]), sa.union(&sb).copied().collect::<Vec<_>>());
            prop_assert_eq!(without(&a, &b), sa.difference(&sb).copied().collect::<Vec<_>>());
        }

        #[test]
        fn galloping_paths((small, large) in skewed()) {
            let (ss, sl) = (set(&small), set(&large));
            let want: Vec<u64> = ss.intersection(&sl).copied().collect();
            prop_assert_eq!(intersect(&small, &large), want.clone());
            prop_assert_eq!(intersect(&large, &small), want.clone());
            let mut acc = large.clone();
            intersect_in_place(&mut acc, &small);
            prop_assert_eq!(&acc, &want);
            let mut acc = small.clone();
            intersect_in_place(&mut acc, &large);
            prop_assert_eq!(&acc, &want);
            prop_assert_eq!(without(&small, &large), ss.difference(&sl).copied().collect::<Vec<_>>());
            prop_assert_eq!(without(&large, &small), sl.difference(&ss).copied().collect::<Vec<_>>());
        }
    }

    #[test]
    fn edge_cases() {
        let e: Vec<u64> = vec![];
        assert!(intersect(&e, &[1, 2]).is_empty());
        assert!(intersect_many::<u64, Vec<u64>>(&[]).is_empty());
        assert!(merge::<u64, Vec<u64>>(&[]).is_empty());
        assert_eq!(without(&[1, 2, 3], &e), vec![1, 2, 3]);
        assert_eq!(
            merge(&[vec![5], vec![], vec![1, 5], vec![3]]),
            vec![1, 3, 5]
        );
        assert_eq!(gallop(&[1, 3, 5, 7, 9, 11], 0, 8), 4);
        assert_eq!(gallop(&[1, 3, 5, 7, 9, 11], 2, 100), 6);
        assert_eq!(gallop(&[1, 3, 5, 7, 9, 11], 5, 0), 5);
    }

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    const VALUES: [&str; 4] = ["", "x", "y", "zz"];
    const PATTERNS: [&str; 10] = [
        "", "x", "x|y", ".*", ".+", "x|", "[xy]", "z.*", "y|zz|q", "a(",
    ];

    fn series_strategy() -> impl Strategy<Value = Vec<Labels>> {
        proptest::collection::vec(
            proptest::collection::vec(0usize..4, 4).prop_map(|vals| {
                let mut pairs: Vec<(&str, &str)> = vec![("__name__", "m")];
                for (i, v) in vals.iter().enumerate() {
                    pairs.push((NAMES[i], VALUES[*v]));
                }
                Labels::from_pairs(pairs)
            }),
            1..60,
        )
    }

    fn matcher_strategy() -> impl Strategy<Value = Matcher> {
        (0usize..5, 0usize..4, 0usize..PATTERNS.len()).prop_filter_map("valid", |(n, op, p)| {
            let name = if n == 4 { "__name__" } else { NAMES[n] };
            let op = [
                MatchOp::Equal,
                MatchOp::NotEqual,
                MatchOp::RegexMatch,
                MatchOp::RegexNoMatch,
            ][op];
            Matcher::new(op, name, PATTERNS[p]).ok()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn postings_for_matchers_matches_brute_force(
            series in series_strategy(),
            ms in proptest::collection::vec(matcher_strategy(), 0..4),
        ) {
            let idx = build_index(&series);
            let ir = IndexReader::new(Bytes::from(idx), "index").unwrap();
            let got = postings_for_matchers(&ir, &ms).unwrap();
            let got_labels: Vec<Labels> = got.iter().map(|r| ir.series(*r).unwrap().0).collect();
            let mut uniq = series.clone();
            uniq.sort();
            uniq.dedup();
            let want: Vec<Labels> = uniq
                .into_iter()
                .filter(|s| ms.iter().all(|m| m.matches(s.get(&m.name).unwrap_or(""))))
                .collect();
            prop_assert_eq!(got_labels, want, "matchers {:?}", ms.iter().map(|m| m.to_string()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn matcher_semantics_examples() {
        let series = vec![
            Labels::from_pairs([("__name__", "up"), ("job", "a")]),
            Labels::from_pairs([("__name__", "up"), ("job", "b"), ("env", "prod")]),
            Labels::from_pairs([("__name__", "up")]),
            Labels::from_pairs([("__name__", "down"), ("env", "dev")]),
        ];
        let ir = IndexReader::new(Bytes::from(build_index(&series)), "index").unwrap();
        let run = |ms: Vec<Matcher>| -> Vec<String> {
            postings_for_matchers(&ir, &ms)
                .unwrap()
                .into_iter()
                .map(|r| ir.series(r).unwrap().0.to_string())
                .collect()
        };
        let m = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        use MatchOp::*;
        // env="" selects series without env
        assert_eq!(
            run(vec![m(Equal, "env", "")]),
            vec![r#"{__name__="up"}"#, r#"{__name__="up", job="a"}"#]
        );
        // env!="prod" includes series lacking env
        assert_eq!(run(vec![m(NotEqual, "env", "prod")]).len(), 3);
        // env!="" requires the label
        assert_eq!(run(vec![m(NotEqual, "env", "")]).len(), 2);
        // job=~"a|b", env!~"prod"
        assert_eq!(
            run(vec![
                m(RegexMatch, "job", "a|b"),
                m(RegexNoMatch, "env", "prod")
            ]),
            vec![r#"{__name__="up", job="a"}"#]
        );
        // only negative matchers: base is all series
        assert_eq!(
            run(vec![m(RegexNoMatch, "__name__", "up")]),
            vec![r#"{__name__="down", env="dev"}"#]
        );
        assert!(run(vec![m(RegexNoMatch, "job", ".*")]).is_empty());
        // every value of a label every series has: the all-series list
        assert_eq!(run(vec![m(RegexMatch, "__name__", ".+")]).len(), 4);
        assert_eq!(run(vec![m(RegexMatch, "__name__", "up|d.*")]).len(), 4);
        // every value, but not every series has the label
        assert_eq!(run(vec![m(RegexMatch, "job", ".+")]).len(), 2);
        assert_eq!(run(vec![]).len(), 4);
        assert!(run(vec![m(Equal, "__name__", "nope")]).is_empty());
    }
}
