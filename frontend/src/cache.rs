//! The results cache: per split part (tenant, query, step, grid offset, interval and
//! interval number), the extents already answered, as Cortex keeps them. A request for
//! a part takes what its extents cover and asks downstream only for the gaps, so a
//! window shifted by a step recomputes only its new edge. Bounded in bytes; the least
//! recently used parts go first.

use std::sync::Arc;

use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::response::{Matrix, Merger};

/// An answered range `[start, end]` (both on the part's step grid) of one part.
#[derive(Debug, Clone)]
pub struct Extent {
    pub start: i64,
    pub end: i64,
    pub matrix: Arc<Matrix>,
    bytes: usize,
}

impl Extent {
    /// The answer for `[start, end]`: its series, and its infos (the annotations an
    /// extent may carry; answers with warnings are not cached).
    pub fn new(start: i64, end: i64, matrix: Matrix) -> Extent {
        let bytes = matrix.bytes() + matrix.infos.iter().map(String::len).sum::<usize>() + 64;
        Extent {
            start,
            end,
            matrix: Arc::new(matrix),
            bytes,
        }
    }
}

#[derive(Clone)]
struct Weigh;

impl Weighter<String, Arc<Vec<Extent>>> for Weigh {
    fn weight(&self, key: &String, v: &Arc<Vec<Extent>>) -> u64 {
        (key.len() + v.iter().map(|e| e.bytes).sum::<usize>()) as u64
    }
}

/// The in-memory results cache (`--query-range.results-cache.max-size-bytes`).
pub struct ResultsCache {
    cache: Cache<String, Arc<Vec<Extent>>, Weigh>,
}

impl std::fmt::Debug for ResultsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultsCache")
            .field("bytes", &self.cache.weight())
            .finish()
    }
}

impl ResultsCache {
    pub fn new(max_bytes: u64) -> ResultsCache {
        // quick_cache sizes its tables by an item estimate: one per 64 KiB.
        let items = (max_bytes / 65_536).clamp(16, 1 << 20) as usize;
        ResultsCache {
            cache: Cache::with_weighter(items, max_bytes, Weigh),
        }
    }

    pub fn get(&self, key: &str) -> Vec<Extent> {
        self.cache
            .get(key)
            .map(|v| v.as_ref().clone())
            .unwrap_or_default()
    }

    pub fn put(&self, key: String, extents: Vec<Extent>) {
        if !extents.is_empty() {
            self.cache.insert(key, Arc::new(extents));
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}

/// The ranges of `[start, end]` (on a grid of `step`) that `extents` do not cover.
pub fn gaps(extents: &[Extent], start: i64, end: i64, step: i64) -> Vec<(i64, i64)> {
    let mut sorted: Vec<&Extent> = extents.iter().collect();
    sorted.sort_by_key(|e| e.start);
    let mut out = Vec::new();
    let mut t = start;
    for e in sorted {
        if t > end {
            break;
        }
        if e.end < t {
            continue;
        }
        if e.start > t {
            let until = (e.start - step).min(end);
            out.push((t, until));
        }
        t = t.max(e.end + step);
    }
    if t <= end {
        out.push((t, end));
    }
    out
}

/// The pieces that make up `[start, end]`: the covered stretches of `extents` and the
/// `fetched` gaps, in time order, each cut to its own range and merged.
pub fn assemble(
    extents: &[Extent],
    fetched: &[(i64, i64, Arc<Matrix>)],
    start: i64,
    end: i64,
    step: i64,
) -> Merger {
    let mut pieces: Vec<(i64, i64, &Matrix)> = fetched
        .iter()
        .map(|(s, e, m)| (*s, *e, m.as_ref()))
        .collect();
    let mut t = start;
    let mut sorted: Vec<&Extent> = extents.iter().collect();
    sorted.sort_by_key(|e| e.start);
    // Cover with extents what the gaps did not: walk the range, skipping fetched gaps.
    let mut gaps_sorted: Vec<(i64, i64)> = fetched.iter().map(|(s, e, _)| (*s, *e)).collect();
    gaps_sorted.sort();
    let mut gi = 0;
    while t <= end {
        if gi < gaps_sorted.len() && gaps_sorted[gi].0 <= t {
            t = t.max(gaps_sorted[gi].1 + step);
            gi += 1;
            continue;
        }
        let Some(e) = sorted.iter().find(|e| e.start <= t && e.end >= t) else {
            break; // not covered: only happens if a fetch was skipped
        };
        let mut until = e.end.min(end);
        if gi < gaps_sorted.len() {
            until = until.min(gaps_sorted[gi].0 - step);
        }
        pieces.push((t, until, e.matrix.as_ref()));
        t = until + step;
    }
    pieces.sort_by_key(|p| p.0);
    let mut m = Merger::default();
    for (s, e, mat) in pieces {
        m.add(mat.cut(s, e));
    }
    m
}

/// `extents` plus a new one, with touching or overlapping extents joined into one.
pub fn add_extent(mut extents: Vec<Extent>, new: Extent, step: i64) -> Vec<Extent> {
    extents.push(new);
    extents.sort_by_key(|e| e.start);
    let mut out: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        match out.last_mut() {
            Some(last) if e.start <= last.end + step => {
                // The joined extent has the infos of both.
                let mut infos = last.matrix.infos.clone();
                for i in &e.matrix.infos {
                    if !infos.contains(i) {
                        infos.push(i.clone());
                    }
                }
                if e.end > last.end {
                    let mut m = Merger::default();
                    m.add(last.matrix.cut(last.start, last.end));
                    m.add(e.matrix.cut(last.end + step, e.end));
                    *last = Extent::new(
                        last.start,
                        e.end,
                        Matrix {
                            series: m.finish(),
                            infos,
                            ..Matrix::default()
                        },
                    );
                } else if infos.len() > last.matrix.infos.len() {
                    *last = Extent::new(
                        last.start,
                        last.end,
                        Matrix {
                            series: last.matrix.series.clone(),
                            infos,
                            ..Matrix::default()
                        },
                    );
                }
            }
            _ => out.push(e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::decode;

    fn matrix(points: &[i64]) -> Matrix {
        let vals: Vec<String> = points
            .iter()
            .map(|t| format!("[{},\"{t}\"]", *t as f64 / 1000.0))
            .collect();
        let body = format!(
            r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{"a":"b"}},"values":[{}]}}]}}}}"#,
            vals.join(",")
        );
        decode(body.as_bytes()).unwrap()
    }

    #[test]
    fn gaps_are_what_no_extent_covers() {
        let ex = vec![
            Extent::new(10, 30, matrix(&[])),
            Extent::new(50, 60, matrix(&[])),
        ];
        assert_eq!(gaps(&ex, 0, 100, 10), vec![(0, 0), (40, 40), (70, 100)]);
        assert_eq!(gaps(&ex, 10, 30, 10), vec![]);
        assert_eq!(gaps(&ex, 20, 55, 5), vec![(35, 45)]);
        assert_eq!(gaps(&[], 0, 10, 10), vec![(0, 10)]);
    }

    #[test]
    fn extents_and_fetched_gaps_assemble_in_order_and_join() {
        let ex = vec![Extent::new(10, 30, matrix(&[10, 20, 30]))];
        let fetched = vec![(40, 50, Arc::new(matrix(&[40, 50, 60])))];
        let s = assemble(&ex, &fetched, 20, 50, 10).finish();
        assert_eq!(s[0].floats.ts, vec![20, 30, 40, 50]);
        let joined = add_extent(ex, Extent::new(40, 50, matrix(&[40, 50])), 10);
        assert_eq!(joined.len(), 1);
        assert_eq!((joined[0].start, joined[0].end), (10, 50));
        assert_eq!(
            joined[0].matrix.series[0].floats.ts,
            vec![10, 20, 30, 40, 50]
        );
        let apart = add_extent(joined, Extent::new(70, 80, matrix(&[70])), 10);
        assert_eq!(apart.len(), 2);
    }

    #[test]
    fn joined_extents_keep_the_infos_of_both() {
        let with = |mut m: Matrix, i: &str| {
            m.infos = vec![i.to_string()];
            m
        };
        let ex = vec![Extent::new(10, 30, with(matrix(&[10, 20, 30]), "a"))];
        let joined = add_extent(ex, Extent::new(40, 50, with(matrix(&[40, 50]), "b")), 10);
        assert_eq!(joined[0].matrix.infos, vec!["a", "b"]);
        let inside = add_extent(joined, Extent::new(20, 30, with(matrix(&[20]), "c")), 10);
        assert_eq!((inside[0].start, inside[0].end), (10, 50));
        assert_eq!(inside[0].matrix.infos, vec!["a", "b", "c"]);
        assert_eq!(
            inside[0].matrix.series[0].floats.ts,
            vec![10, 20, 30, 40, 50]
        );
    }

    #[test]
    fn the_cache_is_bounded_in_bytes() {
        let c = ResultsCache::new(20_000);
        for i in 0..100 {
            c.put(format!("k{i}"), vec![Extent::new(0, 10, matrix(&[0, 10]))]);
        }
        assert!(c.bytes() <= 20_000, "{}", c.bytes());
        assert!(!c.get("k99").is_empty());
    }
}
