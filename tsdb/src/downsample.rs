//! Downsampled (aggregate) chunks, in Thanos's format (`pkg/compact/downsample`), so
//! blocks downsampled by Strata and by Thanos can be read by either.
//!
//! A downsampled block is an ordinary TSDB block whose `meta.json` has
//! `thanos.downsample.resolution` set (300000 for 5m, 3600000 for 1h) and whose chunks
//! are *aggregate chunks*, stored with the chunk encoding byte `0xff`
//! ([`Encoding::Aggr`], Thanos's `ChunkEncAggr`). An aggregate chunk's data is five
//! sub-chunks, in this order: count, sum, min, max, counter ([`AggrType`]). Each is
//!
//! ```text
//! uvarint(len(data))  encoding byte (1 = XOR)  data      -- a present aggregate
//! uvarint(0)                                             -- an absent aggregate
//! ```
//!
//! Every sub-chunk but counter holds one sample per window, stamped with the window's
//! last timestamp (`t - t % res + res - 1`, clipped to the batch's last raw sample).
//!
//! The counter sub-chunk keeps `rate` right across counter resets: it starts with the
//! first raw sample of the chunk, then holds the reset-adjusted counter at the end of
//! every window, and ends with the last *raw* value repeated at the last window's
//! timestamp. A reader ([`CounterSeries`], Thanos's `ApplyCounterResetsSeriesIterator`)
//! walks the counter sub-chunks of consecutive chunks, adds up increases (a drop counts
//! as a reset) and uses the repeated last raw value to detect a reset between chunks.
//!
//! ```
//! use strata_tsdb::downsample::{downsample_raw, AggrChunk, AggrType, RES_5M};
//!
//! // A counter scraped every 15s for 1h, reset to 0 half-way.
//! let raw: Vec<(i64, f64)> = (0..240)
//!     .map(|i| (i * 15_000, if i < 120 { i as f64 } else { (i - 120) as f64 }))
//!     .collect();
//! let chunks = downsample_raw(&raw, RES_5M);
//! let agg = AggrChunk::new(&chunks[0].data).unwrap();
//! let count = agg.samples(AggrType::Count).unwrap();
//! assert_eq!(count.len(), 12); // 12 five-minute windows
//! assert_eq!(count.iter().map(|s| s.1).sum::<f64>(), 240.0);
//! let counter = strata_tsdb::downsample::counter_series(
//!     chunks.iter().map(|c| AggrChunk::new(&c.data).unwrap()),
//! )
//! .unwrap();
//! // The reset is applied: the counter only grows, by 119 + 119 in total.
//! assert!(counter.windows(2).all(|w| w[1].1 >= w[0].1));
//! assert_eq!(counter.last().unwrap().1 - counter[0].1, 238.0);
//! ```

use crate::chunkenc::{is_stale_nan, EncodedChunk, Encoding, XorChunk, XorIter};
use crate::error::{Error, Result};

/// Raw data.
pub const RES_RAW: i64 = 0;
/// The first downsampling level: 5 minutes.
pub const RES_5M: i64 = 5 * 60 * 1000;
/// The second downsampling level: 1 hour.
pub const RES_1H: i64 = 60 * 60 * 1000;
/// A raw block is downsampled to 5m once it spans at least this long (Thanos's
/// `ResLevel1DownsampleRange`, 40h).
pub const DOWNSAMPLE_RANGE_5M: i64 = 40 * 60 * 60 * 1000;
/// A 5m block is downsampled to 1h once it spans at least this long (Thanos's
/// `ResLevel2DownsampleRange`, 10d).
pub const DOWNSAMPLE_RANGE_1H: i64 = 10 * 24 * 60 * 60 * 1000;

/// Samples per aggregate chunk the chunking aims below (Thanos's heuristic).
const TARGET_SAMPLES_PER_CHUNK: usize = 140;

/// The aggregates of an aggregate chunk, in their order in the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggrType {
    Count = 0,
    Sum = 1,
    Min = 2,
    Max = 3,
    Counter = 4,
}

impl AggrType {
    pub const ALL: [AggrType; 5] = [
        AggrType::Count,
        AggrType::Sum,
        AggrType::Min,
        AggrType::Max,
        AggrType::Counter,
    ];
}

use crate::varint::put_uvarint;

/// Go's `binary.Uvarint` (the shared one; it also refuses an 11th byte and 64-bit
/// overflow, which this reader accepted before), `None` if invalid.
fn uvarint(b: &[u8]) -> Option<(u64, usize)> {
    crate::varint::uvarint(b).ok()
}

/// Encode an aggregate chunk's data from its five sub-chunks (Thanos's
/// `EncodeAggrChunk`); `None` marks an absent aggregate.
pub fn encode_aggr(chunks: [Option<&XorChunk>; 5]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chunks {
        match c {
            None => put_uvarint(&mut out, 0),
            Some(c) => {
                let b = c.bytes();
                put_uvarint(&mut out, b.len() as u64);
                out.push(Encoding::Xor as u8);
                out.extend_from_slice(b);
            }
        }
    }
    out
}

/// A parsed aggregate chunk: the data of each present sub-chunk.
#[derive(Debug, Clone, Copy)]
pub struct AggrChunk<'a> {
    parts: [Option<&'a [u8]>; 5],
}

impl<'a> AggrChunk<'a> {
    /// Parse the data of an [`Encoding::Aggr`] chunk.
    pub fn new(data: &'a [u8]) -> Result<AggrChunk<'a>> {
        let mut parts = [None; 5];
        let mut rest = data;
        for (i, part) in parts.iter_mut().enumerate() {
            let bad =
                |what: &str| Error::Invalid(format!("aggregate chunk: sub-chunk {i}: {what}"));
            let (len, n) = uvarint(rest).ok_or_else(|| bad("invalid length"))?;
            rest = &rest[n..];
            if len == 0 {
                continue;
            }
            let len = len as usize;
            if rest.len() < 1 + len {
                return Err(bad("truncated"));
            }
            if rest[0] != Encoding::Xor as u8 {
                return Err(bad(&format!("unsupported encoding {}", rest[0])));
            }
            *part = Some(&rest[1..1 + len]);
            rest = &rest[1 + len..];
        }
        Ok(AggrChunk { parts })
    }

    /// The XOR data of one aggregate, `None` when absent.
    pub fn get(&self, t: AggrType) -> Option<&'a [u8]> {
        self.parts[t as usize]
    }

    /// The samples of one aggregate (empty when absent).
    pub fn samples(&self, t: AggrType) -> Result<Vec<(i64, f64)>> {
        let Some(d) = self.get(t) else {
            return Ok(Vec::new());
        };
        let mut it = XorIter::new(d);
        let v: Vec<(i64, f64)> = it.by_ref().collect();
        match it.err() {
            Some(e) => Err(Error::Invalid(format!("aggregate chunk: {t:?}: {e}"))),
            None => Ok(v),
        }
    }
}

/// Samples in an aggregate chunk: the count sub-chunk's sample count (0 if unreadable).
pub fn aggr_num_samples(data: &[u8]) -> usize {
    AggrChunk::new(data)
        .ok()
        .and_then(|c| c.get(AggrType::Count))
        .map_or(0, |d| match d {
            [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
            _ => 0,
        })
}

/// The last timestamp of the `r`-wide window `t` falls in (Thanos's `currentWindow`).
pub fn current_window(t: i64, r: i64) -> i64 {
    t - t.rem_euclid(r) + r - 1
}

#[derive(Debug, Clone, Copy)]
struct Aggregator {
    total: usize,
    count: usize,
    sum: f64,
    min: f64,
    max: f64,
    counter: f64,
    last: f64,
}

impl Aggregator {
    fn new() -> Self {
        let mut a = Aggregator {
            total: 0,
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            counter: 0.0,
            last: 0.0,
        };
        a.reset();
        a
    }

    fn reset(&mut self) {
        self.count = 0;
        self.sum = 0.0;
        self.min = f64::MAX;
        self.max = -f64::MAX;
    }

    fn add(&mut self, v: f64) {
        if self.total > 0 {
            if v < self.last {
                self.counter += v; // counter reset
            } else {
                self.counter += v - self.last;
            }
        } else {
            self.counter = v;
        }
        self.last = v;
        self.count += 1;
        self.total += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

/// Aggregate `data` into `resolution` windows, calling `emit(window_t, aggregator)` per
/// window; returns the last window's timestamp (Thanos's `downsampleBatch`).
fn downsample_batch(
    data: &[(i64, f64)],
    resolution: i64,
    mut emit: impl FnMut(i64, &Aggregator),
) -> i64 {
    let mut aggr = Aggregator::new();
    let mut next_t = -1i64;
    let mut started = false;
    let last_t = data.last().map_or(0, |s| s.0);
    for &(t, v) in data {
        if is_stale_nan(v) {
            continue;
        }
        if !started || t > next_t {
            if started {
                emit(next_t, &aggr);
            }
            started = true;
            aggr.reset();
            next_t = current_window(t, resolution).min(last_t);
        }
        aggr.add(v);
    }
    if started {
        emit(next_t, &aggr);
    }
    next_t
}

fn range_fullness(mint: i64, maxt: i64, step: i64, count: usize) -> f64 {
    let span = (maxt - mint) as f64 / step as f64;
    if span <= 0.0 {
        return 1.0;
    }
    (count as f64 / span).min(1.0)
}

/// How many chunks to cut a downsampled series into (Thanos's `targetChunkCount`).
fn target_chunk_count(mint: i64, maxt: i64, in_res: i64, out_res: i64, count: usize) -> usize {
    let max_samples = ((maxt - mint) / out_res) as f64;
    let exp = (max_samples * range_fullness(mint, maxt, in_res, count)) as usize + 1;
    let mut x = 1;
    while exp / x > TARGET_SAMPLES_PER_CHUNK {
        x += 1;
    }
    x
}

struct AggrBuilder {
    chunks: [Option<XorChunk>; 5],
    mint: i64,
    maxt: i64,
}

impl AggrBuilder {
    fn new() -> Self {
        AggrBuilder {
            chunks: Default::default(),
            mint: i64::MAX,
            maxt: i64::MIN,
        }
    }

    fn append(&mut self, at: AggrType, t: i64, v: f64) {
        self.chunks[at as usize]
            .get_or_insert_with(XorChunk::new)
            .append(t, v);
        self.mint = self.mint.min(t);
        self.maxt = self.maxt.max(t);
    }

    fn encode(self) -> EncodedChunk {
        let [a, b, c, d, e] = &self.chunks;
        EncodedChunk {
            min_time: self.mint,
            max_time: self.maxt,
            encoding: Encoding::Aggr,
            data: encode_aggr([a.as_ref(), b.as_ref(), c.as_ref(), d.as_ref(), e.as_ref()]),
        }
    }
}

/// Downsample a raw series (sorted by time) into aggregate chunks at `resolution`
/// (Thanos's `downsampleRaw`). Stale markers are dropped.
pub fn downsample_raw(data: &[(i64, f64)], resolution: i64) -> Vec<EncodedChunk> {
    let data: Vec<(i64, f64)> = data
        .iter()
        .copied()
        .filter(|s| !is_stale_nan(s.1))
        .collect();
    let Some((first, last)) = data.first().zip(data.last()) else {
        return Vec::new();
    };
    // Thanos assumes a raw resolution of 1m for its chunk-size heuristic.
    let num_chunks = target_chunk_count(first.0, last.0, 60_000, resolution, data.len());
    let batch_size = data.len() / num_chunks + 1;
    let mut out = Vec::new();
    let mut rest = &data[..];
    while !rest.is_empty() {
        let mut j = batch_size.min(rest.len());
        let cur_w = current_window(rest[j - 1].0, resolution);
        while j < rest.len() && rest[j].0 <= cur_w {
            j += 1;
        }
        let (batch, tail) = rest.split_at(j);
        rest = tail;
        let mut ab = AggrBuilder::new();
        ab.append(AggrType::Counter, batch[0].0, batch[0].1);
        let mut windows = Vec::new();
        let last_t = downsample_batch(batch, resolution, |t, a| windows.push((t, *a)));
        for (t, a) in windows {
            ab.append(AggrType::Sum, t, a.sum);
            ab.append(AggrType::Min, t, a.min);
            ab.append(AggrType::Max, t, a.max);
            ab.append(AggrType::Count, t, a.count as f64);
            ab.append(AggrType::Counter, t, a.counter);
        }
        // The last raw value, at the last window's timestamp.
        ab.append(AggrType::Counter, last_t, batch[batch.len() - 1].1);
        out.push(ab.encode());
    }
    out
}

/// The reset-adjusted counter over the counter sub-chunks of consecutive aggregate chunks
/// (Thanos's `ApplyCounterResetsSeriesIterator`): monotonically non-decreasing, for
/// `rate`/`increase` over downsampled data. Returns `(t, v)` samples.
pub fn counter_series<'a>(
    chunks: impl IntoIterator<Item = AggrChunk<'a>>,
) -> Result<Vec<(i64, f64)>> {
    let mut cs = CounterSeries::default();
    for c in chunks {
        cs.push_chunk(&c.samples(AggrType::Counter)?);
    }
    Ok(cs.out)
}

/// Incremental form of [`counter_series`]: push each chunk's counter samples in order.
#[derive(Debug, Default, Clone)]
pub struct CounterSeries {
    total: usize,
    last_t: i64,
    last_v: f64,
    total_v: f64,
    /// The adjusted samples so far.
    pub out: Vec<(i64, f64)>,
}

impl CounterSeries {
    /// Feed one chunk's counter sub-chunk samples (or a raw chunk's samples).
    pub fn push_chunk(&mut self, samples: &[(i64, f64)]) {
        self.out.reserve(samples.len());
        for &(t, v) in samples {
            if v.is_nan() {
                continue;
            }
            if self.total == 0 {
                self.total = 1;
                self.last_t = t;
                self.last_v = v;
                self.total_v = v;
                self.out.push((t, v));
                continue;
            }
            if t > self.last_t {
                if v >= self.last_v {
                    self.total_v += v - self.last_v;
                } else {
                    self.total_v += v;
                }
                self.last_t = t;
                self.last_v = v;
                self.total += 1;
                self.out.push((t, self.total_v));
            } else if t == self.last_t {
                // The repeated timestamp carries the true last raw value.
                self.last_v = v;
            }
        }
    }
}

/// Downsample aggregate chunks of one series (in time order, at a finer resolution)
/// into aggregate chunks at `resolution` (Thanos's `downsampleAggr`). `mint`/`maxt`:
/// the series' time span, for the chunking heuristic.
pub fn downsample_aggr(
    chunks: &[AggrChunk<'_>],
    mint: i64,
    maxt: i64,
    in_res: i64,
    resolution: i64,
) -> Result<Vec<EncodedChunk>> {
    if chunks.is_empty() {
        return Ok(Vec::new());
    }
    let mut num_samples = 0;
    for c in chunks {
        if let Some(d) = c.get(AggrType::Count) {
            num_samples += XorIter::new(d).num_samples();
        }
    }
    let num_chunks = target_chunk_count(mint, maxt, in_res, resolution, num_samples);
    let batch_size = (chunks.len() / num_chunks).max(1);
    let mut out = Vec::new();
    for part in chunks.chunks(batch_size) {
        out.push(downsample_aggr_batch(part, resolution)?);
    }
    Ok(out)
}

fn downsample_aggr_batch(chunks: &[AggrChunk<'_>], resolution: i64) -> Result<EncodedChunk> {
    let mut ab = AggrBuilder::new();
    type Pick = fn(&Aggregator) -> f64;
    let plain: [(AggrType, Pick); 4] = [
        (AggrType::Count, |a| a.sum),
        (AggrType::Sum, |a| a.sum),
        (AggrType::Min, |a| a.min),
        (AggrType::Max, |a| a.max),
    ];
    for (at, pick) in plain {
        let mut buf = Vec::new();
        for c in chunks {
            buf.extend(c.samples(at)?);
        }
        if buf.is_empty() {
            continue;
        }
        let mut w = Vec::new();
        downsample_batch(&buf, resolution, |t, a| w.push((t, pick(a))));
        for (t, v) in w {
            ab.append(at, t, v);
        }
    }
    let mut cs = CounterSeries::default();
    for c in chunks {
        cs.push_chunk(&c.samples(AggrType::Counter)?);
    }
    if !cs.out.is_empty() {
        let buf = cs.out;
        ab.append(AggrType::Counter, buf[0].0, buf[0].1);
        let mut w = Vec::new();
        let last_t = downsample_batch(&buf, resolution, |t, a| w.push((t, a.counter)));
        for (t, v) in w {
            ab.append(AggrType::Counter, t, v);
        }
        ab.append(AggrType::Counter, last_t, cs.last_v);
    }
    if ab.mint > ab.maxt {
        return Err(Error::Invalid("aggregate chunks hold no samples".into()));
    }
    Ok(ab.encode())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(c: &EncodedChunk) -> AggrChunk<'_> {
        assert_eq!(c.encoding, Encoding::Aggr);
        AggrChunk::new(&c.data).unwrap()
    }

    #[test]
    fn encoding_layout_matches_thanos() {
        let mut x = XorChunk::new();
        x.append(1000, 2.0);
        let data = encode_aggr([Some(&x), None, None, None, Some(&x)]);
        let n = x.bytes().len();
        assert_eq!(data[0] as usize, n);
        assert_eq!(data[1], 1, "XOR encoding byte");
        assert_eq!(&data[2..2 + n], x.bytes());
        assert_eq!(&data[2 + n..2 + n + 3], &[0, 0, 0]);
        let c = AggrChunk::new(&data).unwrap();
        assert!(c.get(AggrType::Sum).is_none());
        assert_eq!(c.samples(AggrType::Counter).unwrap(), vec![(1000, 2.0)]);
        assert_eq!(aggr_num_samples(&data), 1);
        assert!(AggrChunk::new(&data[..data.len() - 2]).is_err());
        assert_eq!(Encoding::from_u8(0xff), Some(Encoding::Aggr));
    }

    #[test]
    fn raw_aggregates_per_window() {
        // 1 sample per minute for 3h, value = minute index, with a stale marker.
        let mut raw: Vec<(i64, f64)> = (0..180).map(|i| (i * 60_000, i as f64)).collect();
        raw[7].1 = f64::from_bits(crate::chunkenc::STALE_NAN_BITS);
        let out = downsample_raw(&raw, RES_5M);
        let mut count = Vec::new();
        let mut sum = Vec::new();
        let mut min = Vec::new();
        let mut max = Vec::new();
        for c in &out {
            let a = parse(c);
            count.extend(a.samples(AggrType::Count).unwrap());
            sum.extend(a.samples(AggrType::Sum).unwrap());
            min.extend(a.samples(AggrType::Min).unwrap());
            max.extend(a.samples(AggrType::Max).unwrap());
        }
        assert_eq!(count.len(), 36);
        assert_eq!(count[0], (299_999, 5.0));
        assert_eq!(count[1], (599_999, 4.0), "stale marker dropped");
        assert_eq!(sum[0].1, 0.0 + 1.0 + 2.0 + 3.0 + 4.0);
        assert_eq!(min[2].1, 10.0);
        assert_eq!(max[2].1, 14.0);
        // The last window is clipped to the last raw timestamp.
        assert_eq!(count.last().unwrap().0, 179 * 60_000);
        let total: f64 = count.iter().map(|s| s.1).sum();
        assert_eq!(total, 179.0);
    }

    #[test]
    fn counter_resets_survive_two_levels() {
        // A counter +1 every 15s for 3 days, reset to 0 every 7 hours.
        let step = 15_000;
        let n = 3 * 24 * 240;
        let mut raw = Vec::new();
        let mut v = 0.0;
        let mut increase = 0.0;
        for i in 0..n {
            let t = i as i64 * step;
            if i > 0 && t % (7 * 3_600_000) == 0 {
                v = 0.0;
                increase += 0.0; // the reset itself is an increase of v (0)
            } else if i > 0 {
                v += 1.0;
                increase += 1.0;
            }
            raw.push((t, v));
        }
        let five = downsample_raw(&raw, RES_5M);
        assert!(five.len() > 1, "several chunks");
        let parsed: Vec<AggrChunk<'_>> = five.iter().map(parse).collect();
        let c5 = counter_series(parsed.iter().copied()).unwrap();
        assert!(c5.windows(2).all(|w| w[1].1 >= w[0].1 && w[1].0 > w[0].0));
        assert_eq!(c5.last().unwrap().1 - c5[0].1, increase);

        let hour = downsample_aggr(&parsed, 0, raw.last().unwrap().0, RES_5M, RES_1H).unwrap();
        let ph: Vec<AggrChunk<'_>> = hour.iter().map(parse).collect();
        let c1 = counter_series(ph.iter().copied()).unwrap();
        assert!(c1.windows(2).all(|w| w[1].1 >= w[0].1));
        assert_eq!(c1.last().unwrap().1 - c1[0].1, increase);
        let count: f64 = ph
            .iter()
            .flat_map(|c| c.samples(AggrType::Count).unwrap())
            .map(|s| s.1)
            .sum();
        assert_eq!(count, n as f64);
        let sum1: f64 = ph
            .iter()
            .flat_map(|c| c.samples(AggrType::Sum).unwrap())
            .map(|s| s.1)
            .sum();
        let sum_raw: f64 = raw.iter().map(|s| s.1).sum();
        assert_eq!(sum1, sum_raw);
        let max1 = ph
            .iter()
            .flat_map(|c| c.samples(AggrType::Max).unwrap())
            .map(|s| s.1)
            .fold(f64::MIN, f64::max);
        assert_eq!(max1, raw.iter().map(|s| s.1).fold(f64::MIN, f64::max));
        // 1h windows: one count sample per hour.
        let nc: usize = ph
            .iter()
            .map(|c| c.samples(AggrType::Count).unwrap().len())
            .sum();
        assert_eq!(nc, 72);
    }
}
