//! Series as the fan-out hands them to the engine: each source's samples of a series
//! kept as it arrived — XOR chunks still encoded (`Bytes` slices of the gRPC message or
//! of the bucket's range read, never copied) or samples already decoded (downsampled
//! aggregates) — and merged across sources and HA replicas only when the engine
//! consumes the series ([`LazySeries`]). A query then holds the encoded bytes of what
//! it selected plus one decoded series, not every decoded sample (16 bytes each).
//!
//! Merging and dedup give exactly what merging decoded answers gave: a series' parts
//! concatenated in source order, sorted by time (stable: on equal timestamps the
//! earlier source's sample stays) and deduplicated; replicas merged pairwise in label
//! order with the penalty algorithm ([`crate::dedup`]).
//!
//! Native histogram chunks are decoded when they arrive (in range, as float histograms)
//! and ride beside the series' floats ([`Part::Mixed`]); HA replicas' histograms are
//! merged with the same penalty algorithm as floats.

use std::collections::BTreeMap;

use bytes::Bytes;
use strata_promql::{LazySamples, StorageError};
use strata_tsdb::chunkenc::Encoding;
use strata_tsdb::chunkenc::{append_xor_in_range, count_xor_in_range, last_xor_in_range};
use strata_tsdb::dedup::merge_pair;
use strata_tsdb::histogram::{decode_chunk_float_in_range, FloatHistogram};
use strata_tsdb::labels::Labels;

use crate::stats::{Counter, StoreError};

/// One source's samples of one series.
#[derive(Debug, Clone)]
pub enum Part {
    /// Decoded samples, sorted by time.
    Samples(Vec<(i64, f64)>),
    /// XOR chunks in time order; samples in `[mint, maxt]` are the series'.
    Chunks {
        chunks: Vec<Bytes>,
        mint: i64,
        maxt: i64,
        /// The chunks' first and last timestamps when they do not overlap (each chunk
        /// ends before the next begins); `None` when they might.
        span: Option<(i64, i64)>,
        /// Samples in the chunks (counted from their headers when they arrived): the
        /// samples in range, plus those of a chunk straddling the range's edges.
        len: usize,
    },
    /// Native histogram samples (in range, sorted by time, unique) beside the
    /// series' floats.
    Mixed {
        floats: Box<Part>,
        hists: Vec<(i64, FloatHistogram)>,
    },
}

impl Part {
    /// Samples in range (chunks: all of their samples, an upper bound).
    pub fn len(&self) -> usize {
        match self {
            Part::Samples(v) => v.len(),
            Part::Chunks { len, .. } => *len,
            Part::Mixed { floats, hists } => floats.len() + hists.len(),
        }
    }

    /// The native histogram samples (none for a float-only part).
    pub fn histograms(&self) -> &[(i64, FloatHistogram)] {
        match self {
            Part::Mixed { hists, .. } => hists,
            _ => &[],
        }
    }

    /// The float part and the histograms.
    pub(crate) fn split(self) -> (Part, Vec<(i64, FloatHistogram)>) {
        match self {
            Part::Mixed { floats, hists } => (*floats, hists),
            p => (p, Vec::new()),
        }
    }

    /// `floats` with `hists` beside them (just `floats` when there are none).
    pub(crate) fn join(floats: Part, hists: Vec<(i64, FloatHistogram)>) -> Part {
        if hists.is_empty() {
            floats
        } else {
            Part::Mixed {
                floats: Box::new(floats),
                hists,
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append the samples to `out`.
    pub fn append_to(&self, out: &mut Vec<(i64, f64)>) -> Result<(), &'static str> {
        match self {
            Part::Samples(v) => out.extend_from_slice(v),
            Part::Chunks {
                chunks, mint, maxt, ..
            } => {
                for c in chunks {
                    append_xor_in_range(c, *mint, *maxt, out)?;
                }
            }
            Part::Mixed { floats, .. } => floats.append_to(out)?,
        }
        Ok(())
    }

    /// The newest sample with a timestamp in `[lo, hi]`. Chunks that do not overlap are
    /// decoded newest first, stopping at the first holding one; otherwise everything is
    /// decoded and merged as [`Part::append_to`] and a sort would.
    pub fn last_in(&self, lo: i64, hi: i64) -> Result<Option<(i64, f64)>, &'static str> {
        match self {
            Part::Samples(v) => Ok(last_of(v, lo, hi)),
            Part::Chunks {
                chunks,
                mint,
                maxt,
                span: Some(_),
                ..
            } => {
                let (lo, hi) = (lo.max(*mint), hi.min(*maxt));
                for c in chunks.iter().rev() {
                    if let Some(s) = last_xor_in_range(c, lo, hi)? {
                        return Ok(Some(s));
                    }
                }
                Ok(None)
            }
            Part::Chunks { span: None, .. } => {
                let mut v = Vec::with_capacity(self.len());
                merge_parts(std::slice::from_ref(self), &mut v)?;
                Ok(last_of(&v, lo, hi))
            }
            Part::Mixed { floats, .. } => floats.last_in(lo, hi),
        }
    }

    /// This part followed by `next` (a later block's part of the same series): chunks
    /// stay encoded; samples are concatenated and, where they overlap, sorted (stable:
    /// this part's sample wins a timestamp) and deduplicated.
    pub fn extend(self, next: Part) -> Result<Part, &'static str> {
        if matches!(self, Part::Mixed { .. }) || matches!(next, Part::Mixed { .. }) {
            let (a, mut ha) = self.split();
            let (b, hb) = next.split();
            ha.extend(hb);
            sort_unique(&mut ha);
            return Ok(Part::join(a.extend(b)?, ha));
        }
        match (self, next) {
            (
                Part::Chunks {
                    mut chunks,
                    mint,
                    maxt,
                    span,
                    len,
                },
                Part::Chunks {
                    chunks: more,
                    mint: m2,
                    maxt: x2,
                    span: s2,
                    len: l2,
                },
            ) => {
                // Each chunk's samples lie in its block, inside both ranges' union.
                chunks.extend(more);
                let span = match (span, s2) {
                    (Some(a), Some(b)) if a.1 < b.0 => Some((a.0, b.1)),
                    _ => None,
                };
                Ok(Part::Chunks {
                    chunks,
                    mint: mint.min(m2),
                    maxt: maxt.max(x2),
                    span,
                    len: len + l2,
                })
            }
            (a, b) => {
                let mut v = a.decode()?;
                b.append_to(&mut v)?;
                if !v.windows(2).all(|w| w[0].0 < w[1].0) {
                    v.sort_by_key(|p| p.0);
                    v.dedup_by_key(|p| p.0);
                }
                Ok(Part::Samples(v))
            }
        }
    }

    /// The samples, decoded.
    pub fn decode(self) -> Result<Vec<(i64, f64)>, &'static str> {
        match self {
            Part::Samples(v) => Ok(v),
            Part::Mixed { floats, .. } => floats.decode(),
            p => {
                let mut out = Vec::with_capacity(p.len());
                p.append_to(&mut out)?;
                Ok(out)
            }
        }
    }
}

/// Collects one series' XOR chunks from a source, counting each chunk (bytes) and its
/// samples in `[mint, maxt]` as it arrives, so limits trip before anything is decoded.
pub struct ChunksBuilder<'a> {
    count: &'a Counter,
    mint: i64,
    maxt: i64,
    chunks: Vec<Bytes>,
    len: usize,
    /// The chunks overlap or are out of order: decoded, they need sorting.
    unordered: bool,
    first_min: i64,
    last_max: i64,
    /// Native histogram samples in range, decoded as their chunks arrived.
    hists: Vec<(i64, FloatHistogram)>,
}

impl<'a> ChunksBuilder<'a> {
    pub fn new(count: &'a Counter, mint: i64, maxt: i64) -> Self {
        ChunksBuilder {
            count,
            mint,
            maxt,
            chunks: Vec::new(),
            len: 0,
            unordered: false,
            first_min: i64::MAX,
            last_max: i64::MIN,
            hists: Vec::new(),
        }
    }

    /// A native histogram chunk (`Encoding::Histogram` or `FloatHistogram`): its
    /// samples in range are decoded now and counted as samples.
    pub fn push_histogram(
        &mut self,
        encoding: Encoding,
        data: &[u8],
    ) -> Result<(), Result<StoreError, &'static str>> {
        let before = self.hists.len();
        decode_chunk_float_in_range(encoding, data, self.mint, self.maxt, &mut self.hists)
            .map_err(|_| Err("histogram chunk does not decode"))?;
        self.count.samples(self.hists.len() - before).map_err(Ok)?;
        Ok(())
    }

    /// An XOR chunk whose samples lie in `[cmin, cmax]`; `Err` with the decoding error
    /// (the caller names the series) or a limit.
    ///
    /// Counted by its header, all of its samples, without decoding it: a chunk that
    /// straddles the range's edge is fetched and held whole, and counting only its
    /// samples in range meant decoding it once here and again when the engine reads it.
    pub fn push(
        &mut self,
        data: Bytes,
        (cmin, cmax): (i64, i64),
    ) -> Result<(), Result<StoreError, &'static str>> {
        if cmin > self.maxt || cmax < self.mint {
            return Ok(()); // none in range (every source sends its chunks' true range)
        }
        // the chunk's range given as inside the query's: the header's count, undecoded
        let n =
            count_xor_in_range(&data, (self.mint, self.maxt), self.mint, self.maxt).map_err(Err)?;
        self.count.samples(n).map_err(Ok)?;
        if n == 0 {
            return Ok(());
        }
        self.unordered |= cmin <= self.last_max;
        self.first_min = self.first_min.min(cmin);
        self.last_max = self.last_max.max(cmax);
        self.len += n;
        self.chunks.push(data);
        Ok(())
    }

    /// The part (`None` without samples in range). Overlapping chunks (a head and a
    /// block of the same time) are decoded here: their merge needs the samples.
    pub fn finish(mut self) -> Result<Option<Part>, &'static str> {
        if !self.hists.is_empty() {
            let mut hists = std::mem::take(&mut self.hists);
            sort_unique(&mut hists);
            let floats = self.finish()?.unwrap_or(Part::Samples(Vec::new()));
            return Ok(Some(Part::join(floats, hists)));
        }
        if self.len == 0 {
            return Ok(None);
        }
        let part = Part::Chunks {
            chunks: self.chunks,
            mint: self.mint,
            maxt: self.maxt,
            span: (!self.unordered).then_some((self.first_min, self.last_max)),
            len: self.len,
        };
        if !self.unordered {
            return Ok(Some(part));
        }
        let mut v = part.decode()?;
        v.sort_by_key(|p| p.0); // stable: the first copy stays first
        v.dedup_by_key(|p| p.0);
        Ok(Some(Part::Samples(v)))
    }
}

/// A merged series: per replica (in label order), its parts in source order.
#[derive(Debug, Default)]
pub struct LazySeries {
    pub replicas: Vec<Vec<Part>>,
    /// Replicas are merged as counters (`rate`, `increase`, …).
    pub counter: bool,
}

impl LazySeries {
    /// Samples in range before merging (an upper bound of the merged count).
    pub fn len(&self) -> usize {
        self.replicas.iter().flatten().map(Part::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The newest merged sample with a timestamp in `[lo, hi]`. One replica: each
    /// source's newest in range, the latest winning and the earlier source on a tie (as
    /// the merge keeps the first copy of a timestamp). Replicas are deduplicated over
    /// the whole range first: which one a sample comes from depends on their history.
    pub fn last_in(&self, lo: i64, hi: i64) -> Result<Option<(i64, f64)>, &'static str> {
        let [parts] = self.replicas.as_slice() else {
            let mut v = Vec::new();
            self.decode_to(&mut v)?;
            return Ok(last_of(&v, lo, hi));
        };
        let mut best: Option<(i64, f64)> = None;
        for p in parts {
            if let Some(s) = p.last_in(lo, hi)? {
                if best.is_none_or(|b| s.0 > b.0) {
                    best = Some(s);
                }
            }
        }
        Ok(best)
    }

    /// The merged samples into `out` (replacing its contents).
    pub fn decode_to(&self, out: &mut Vec<(i64, f64)>) -> Result<(), &'static str> {
        out.clear();
        let Some((first, rest)) = self.replicas.split_first() else {
            return Ok(());
        };
        merge_parts(first, out)?;
        let mut other = Vec::new();
        for r in rest {
            other.clear();
            merge_parts(r, &mut other)?;
            *out = merge_pair(out, &other, self.counter);
        }
        Ok(())
    }

    /// Whether any part holds native histogram samples.
    pub fn has_histograms(&self) -> bool {
        self.replicas
            .iter()
            .flatten()
            .any(|p| !p.histograms().is_empty())
    }

    /// The merged native histogram samples into `out` (replacing its contents): each
    /// replica's parts merged as floats are, replicas merged pairwise in label order
    /// with the penalty algorithm (as floats, without counter correction).
    pub fn decode_histograms_to(&self, out: &mut Vec<(i64, FloatHistogram)>) {
        out.clear();
        let mut first = true;
        for parts in &self.replicas {
            let mut r: Vec<(i64, FloatHistogram)> = Vec::new();
            for p in parts {
                r.extend_from_slice(p.histograms());
            }
            sort_unique(&mut r);
            if first {
                *out = r;
                first = false;
            } else if !r.is_empty() {
                *out = if out.is_empty() {
                    r
                } else {
                    strata_tsdb::dedup::merge_pair_samples(out, &r)
                };
            }
        }
    }

    /// The merged samples.
    pub fn decode(self) -> Result<Vec<(i64, f64)>, &'static str> {
        if let [parts] = self.replicas.as_slice() {
            if let [Part::Samples(_)] = parts.as_slice() {
                let mut r = self.replicas;
                if let Some(Part::Samples(v)) = r.pop().and_then(|mut p| p.pop()) {
                    return Ok(v);
                }
                unreachable!("checked above");
            }
        }
        let mut out = Vec::with_capacity(self.len());
        self.decode_to(&mut out)?;
        Ok(out)
    }
}

/// A decoded series with native histograms as chunks of each kind (floats and
/// histograms merged by time, cut with the head's rules: 2 h chunk ranges), each with
/// its encoding; for answers that re-encode (Store API, streamed remote read).
pub fn cut_mixed(
    floats: Vec<(i64, f64)>,
    hists: Vec<(i64, FloatHistogram)>,
) -> Vec<strata_tsdb::chunkenc::EncodedChunk> {
    use strata_tsdb::dedup::Sample as S;
    let mut all: Vec<(i64, S)> = floats
        .into_iter()
        .map(|(t, v)| (t, S::Float(v)))
        .chain(hists.into_iter().map(|(t, h)| (t, S::FloatHistogram(h))))
        .collect();
    all.sort_by_key(|s| s.0); // stable: a float before a histogram at one timestamp
    strata_tsdb::dedup::cut_samples(&all, 2 * 3_600_000)
}

/// Sort by time (stable: the first copy of a timestamp stays) and drop repeats.
pub(crate) fn sort_unique(v: &mut Vec<(i64, FloatHistogram)>) {
    if !v.windows(2).all(|w| w[0].0 < w[1].0) {
        v.sort_by_key(|p| p.0);
        v.dedup_by_key(|p| p.0);
    }
}

/// One series' parts from several sources, concatenated in source order, then sorted
/// (stable) and deduplicated by timestamp where they were not already in order.
fn merge_parts(parts: &[Part], out: &mut Vec<(i64, f64)>) -> Result<(), &'static str> {
    out.reserve(parts.iter().map(Part::len).sum());
    for p in parts {
        p.append_to(out)?;
    }
    if !out.windows(2).all(|w| w[0].0 < w[1].0) {
        out.sort_by_key(|p| p.0);
        out.dedup_by_key(|p| p.0);
    }
    Ok(())
}

/// The last of sorted samples `v` with a timestamp in `[lo, hi]`.
fn last_of(v: &[(i64, f64)], lo: i64, hi: i64) -> Option<(i64, f64)> {
    strata_promql::newest_in(v, lo, hi).map(|i| v[i])
}

/// A decoding error as the engine gets it (the engine names the series).
fn chunk_data(e: &'static str) -> StorageError {
    StorageError::Unavailable(format!("chunk data: {e}"))
}

/// A series the engine decodes when it consumes it.
pub struct EngineSeries {
    pub series: LazySeries,
}

impl LazySamples for EngineSeries {
    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        self.series.decode_to(out).map_err(chunk_data)
    }

    fn decode_last_into(
        &self,
        out: &mut Vec<(i64, f64)>,
        lo: i64,
        hi: i64,
    ) -> Result<(), StorageError> {
        out.clear();
        out.extend(self.series.last_in(lo, hi).map_err(chunk_data)?);
        Ok(())
    }

    fn decode_histograms_into(
        &self,
        out: &mut Vec<(i64, FloatHistogram)>,
    ) -> Result<(), StorageError> {
        self.series.decode_histograms_to(out);
        Ok(())
    }
}

/// Group the sources' series (each source's list in any order) by labels: parts in
/// source order, result sorted by labels. Series without samples are dropped unless
/// `keep_empty`.
pub fn merge_sources(
    parts: Vec<Vec<(Labels, Part)>>,
    keep_empty: bool,
) -> Vec<(Labels, Vec<Part>)> {
    let mut parts: Vec<Vec<(Labels, Part)>> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    // One source whose series are sorted and unique (a Store API answer is): no map.
    if parts.len() == 1 && parts[0].windows(2).all(|w| w[0].0 < w[1].0) {
        return parts
            .pop()
            .expect("one part")
            .into_iter()
            .filter(|(_, p)| keep_empty || !p.is_empty())
            .map(|(l, p)| (l, vec![p]))
            .collect();
    }
    let mut map: BTreeMap<Labels, Vec<Part>> = BTreeMap::new();
    for part in parts {
        for (l, p) in part {
            let e = map.entry(l).or_default();
            if keep_empty || !p.is_empty() {
                e.push(p);
            }
        }
    }
    map.into_iter()
        .filter(|(_, ps)| keep_empty || !ps.is_empty())
        .collect()
}

/// Group merged series (sorted by labels) by their labels without `replica_labels`:
/// each group's replicas in label order; result sorted by the reduced labels.
pub fn dedup(
    series: Vec<(Labels, Vec<Part>)>,
    replica_labels: &[String],
    counter: bool,
) -> Vec<(Labels, LazySeries)> {
    let names: Vec<&str> = replica_labels.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<Labels, LazySeries> = BTreeMap::new();
    for (labels, parts) in series {
        let g = groups
            .entry(labels.without(&names))
            .or_insert_with(|| LazySeries {
                replicas: Vec::new(),
                counter,
            });
        g.replicas.push(parts);
    }
    groups.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tsdb::chunkenc::XorChunk;

    fn chunk(pts: &[(i64, f64)]) -> (Bytes, (i64, i64)) {
        let mut c = XorChunk::new();
        for &(t, v) in pts {
            c.append(t, v);
        }
        (
            Bytes::from(c.into_bytes()),
            (pts[0].0, pts[pts.len() - 1].0),
        )
    }

    /// Chunks kept encoded decode to what decoding on arrival gave: in range, merged
    /// across sources with the first source winning equal timestamps, and counted
    /// (samples in range) as they arrive.
    #[test]
    fn lazy_parts_merge_as_decoded_ones() {
        let count = Counter::unaccounted();
        let a: Vec<(i64, f64)> = (0..50).map(|i| (i * 10, i as f64)).collect();
        let b: Vec<(i64, f64)> = (30..80).map(|i| (i * 10, -(i as f64))).collect();
        let (mint, maxt) = (95, 705);
        let mut pa = ChunksBuilder::new(&count, mint, maxt);
        for part in a.chunks(12) {
            let (d, r) = chunk(part);
            pa.push(d, r).unwrap();
        }
        let pa = pa.finish().unwrap().unwrap();
        let mut pb = ChunksBuilder::new(&count, mint, maxt);
        for part in b.chunks(7) {
            let (d, r) = chunk(part);
            pb.push(d, r).unwrap();
        }
        let pb = pb.finish().unwrap().unwrap();
        let in_range = |v: &[(i64, f64)]| -> Vec<(i64, f64)> {
            v.iter()
                .copied()
                .filter(|p| p.0 >= mint && p.0 <= maxt)
                .collect()
        };
        // counted whole: every chunk that overlaps the range (a: 0..120, … 600..719,
        // 12 samples each but the last 2; b: 300..369, …, 720..789 by 7 samples)
        let overlapping = |v: &[(i64, f64)], n: usize| -> usize {
            v.chunks(n)
                .filter(|c| c[0].0 <= maxt && c[c.len() - 1].0 >= mint)
                .map(|c| c.len())
                .sum()
        };
        assert_eq!(pa.len(), overlapping(&a, 12));
        assert_eq!(pb.len(), overlapping(&b, 7));
        assert!(pa.len() > in_range(&a).len());
        let l = Labels::from_pairs([("__name__", "x")]);
        let merged = merge_sources(vec![vec![(l.clone(), pa)], vec![(l.clone(), pb)]], false);
        let s = LazySeries {
            replicas: vec![merged[0].1.clone()],
            counter: false,
        };
        let mut want = in_range(&a);
        want.extend(in_range(&b).into_iter().filter(|p| p.0 > a[49].0));
        assert_eq!(s.decode().unwrap(), want);
        // A part with no sample in range is dropped when built.
        let mut none = ChunksBuilder::new(&count, 10_000, 20_000);
        let (d, r) = chunk(&a);
        none.push(d, r).unwrap();
        assert!(none.finish().unwrap().is_none());
    }

    /// The newest sample in a window, read newest chunk first, is the last in range of
    /// the fully decoded and merged series: ordered chunks, later blocks' parts
    /// appended (overlapping or not), several sources tying on timestamps, decoded
    /// parts, and replicas (deduplicated first).
    #[test]
    fn last_in_window_is_the_last_of_the_decoded_series() {
        let count = Counter::unaccounted();
        let built = |v: &[(i64, f64)], per: usize, (mint, maxt): (i64, i64)| {
            let mut p = ChunksBuilder::new(&count, mint, maxt);
            for c in v.chunks(per) {
                let (d, r) = chunk(c);
                p.push(d, r).unwrap();
            }
            p.finish().unwrap()
        };
        let pts = |from: i64, to: i64, step: i64, sign: f64| -> Vec<(i64, f64)> {
            (from..to).map(|i| (i * step, sign * i as f64)).collect()
        };
        let range = (95, 2_005);
        let a = built(&pts(0, 120, 10, 1.0), 25, range).unwrap();
        // a later block: no overlap, and one overlapping the end of `a`
        let later = built(&pts(120, 180, 10, 1.0), 25, range).unwrap();
        let overlap = built(&pts(100, 200, 10, -1.0), 30, range).unwrap();
        assert!(matches!(a, Part::Chunks { span: Some(_), .. }));
        let joined = a.clone().extend(later.clone()).unwrap();
        assert!(matches!(
            joined,
            Part::Chunks {
                span: Some((0, 1790)),
                ..
            }
        ));
        let tangled = a.clone().extend(overlap.clone()).unwrap();
        assert!(matches!(tangled, Part::Chunks { span: None, .. }));
        let decoded = Part::Samples(pts(50, 150, 10, 2.0));
        let shapes: Vec<Vec<Vec<Part>>> = vec![
            vec![vec![a.clone()]],
            vec![vec![joined.clone()]],
            vec![vec![tangled.clone()]],
            vec![vec![a.clone(), overlap.clone()]],
            vec![vec![overlap.clone(), a.clone(), decoded.clone()]],
            vec![vec![decoded.clone(), joined.clone()]],
            vec![vec![a.clone()], vec![overlap.clone()]],
        ];
        for (i, replicas) in shapes.into_iter().enumerate() {
            let s = LazySeries {
                replicas,
                counter: false,
            };
            let mut all = Vec::new();
            s.decode_to(&mut all).unwrap();
            for lo in (-20..2_100).step_by(37) {
                for width in [0, 1, 9, 10, 55, 300, 5_000] {
                    let hi = lo + width;
                    assert_eq!(
                        s.last_in(lo, hi).unwrap(),
                        last_of(&all, lo, hi),
                        "shape {i}, [{lo}, {hi}]"
                    );
                }
            }
        }
        // a damaged chunk is an error, not a missing sample
        let (d, r) = chunk(&pts(0, 50, 10, 1.0));
        let mut p = ChunksBuilder::new(&count, i64::MIN, i64::MAX);
        p.push(d.slice(..d.len() / 2), r).unwrap();
        let broken = LazySeries {
            replicas: vec![vec![p.finish().unwrap().unwrap()]],
            counter: false,
        };
        assert!(broken.last_in(0, 1_000).is_err());
    }

    /// HA dedup of parts decoded at consumption gives what dedup of decoded series
    /// gave (`crate::dedup::dedup`), counters included.
    fn fh(count: f64) -> FloatHistogram {
        FloatHistogram {
            count,
            sum: count,
            ..Default::default()
        }
    }

    /// Histograms ride beside floats through extend, merge and HA dedup: a replica's
    /// gap is filled from the other replica, as for floats.
    #[test]
    fn histograms_merge_and_dedup_as_floats_do() {
        let h = |ts: &[i64]| -> Vec<(i64, FloatHistogram)> {
            ts.iter().map(|&t| (t, fh(t as f64))).collect()
        };
        let mixed = |floats: Vec<(i64, f64)>, hs| Part::join(Part::Samples(floats), hs);
        // one block's part, then a later one: concatenated
        let p = mixed(vec![(1, 1.0)], h(&[10_000, 20_000]))
            .extend(mixed(vec![], h(&[20_000, 30_000])))
            .unwrap();
        assert_eq!(p.histograms(), h(&[10_000, 20_000, 30_000]).as_slice());
        assert_eq!(p.len(), 4);
        assert_eq!(p.clone().decode().unwrap(), vec![(1, 1.0)]);
        // replica a misses a long stretch; b fills it
        let all: Vec<i64> = (0..100).map(|i| i * 15_000).collect();
        let gap: Vec<i64> = all
            .iter()
            .copied()
            .filter(|t| !(300_000..900_000).contains(t))
            .collect();
        let s = LazySeries {
            replicas: vec![vec![mixed(vec![], h(&gap))], vec![mixed(vec![], h(&all))]],
            counter: true,
        };
        assert!(s.has_histograms());
        let mut out = Vec::new();
        s.decode_histograms_to(&mut out);
        let got: Vec<i64> = out.iter().map(|p| p.0).collect();
        assert_eq!(got, all);
        // a float-only series has none
        let f = LazySeries {
            replicas: vec![vec![Part::Samples(vec![(1, 1.0)])]],
            counter: false,
        };
        assert!(!f.has_histograms());
    }

    #[test]
    fn lazy_dedup_matches_eager_dedup() {
        let count = Counter::unaccounted();
        let l = |r: &str, job: &str| {
            Labels::from_pairs([("__name__", "up"), ("job", job), ("replica", r)])
        };
        // Replica a stops at 300 s, b (offset, lower counter) goes on.
        let a: Vec<(i64, f64)> = (0..20).map(|i| (i * 15_000, 100.0 + i as f64)).collect();
        let b: Vec<(i64, f64)> = (0..40).map(|i| (i * 15_000 + 2_000, i as f64)).collect();
        let encoded = |v: &[(i64, f64)]| {
            let mut p = ChunksBuilder::new(&count, i64::MIN, i64::MAX);
            for part in v.chunks(9) {
                let (d, r) = chunk(part);
                p.push(d, r).unwrap();
            }
            p.finish().unwrap().unwrap()
        };
        let series = vec![
            (l("a", "x"), vec![encoded(&a)]),
            (l("b", "x"), vec![Part::Samples(b.clone())]),
            (l("a", "y"), vec![encoded(&b)]),
        ];
        let rl = vec!["replica".to_string()];
        for counter in [false, true] {
            let want = crate::dedup::dedup(
                vec![
                    (l("a", "x"), a.clone()),
                    (l("b", "x"), b.clone()),
                    (l("a", "y"), b.clone()),
                ],
                &rl,
                counter,
            );
            let got: Vec<(Labels, Vec<(i64, f64)>)> = dedup(series.clone(), &rl, counter)
                .into_iter()
                .map(|(l, s)| (l, s.decode().unwrap()))
                .collect();
            assert_eq!(got, want, "counter: {counter}");
        }
    }
}
