//! An in-memory [`Storage`] for tests and the conformance runner. By default it answers
//! [`Storage::select_lazy`] with XOR chunks the engine decodes per series (as the
//! querier's sources do); [`MemStorage::decoded`] answers decoded samples, so the two
//! evaluations can be compared.

use std::collections::BTreeMap;
use std::sync::Mutex;

use strata_tsdb::labels::Labels;
use strata_tsdb::matcher::Matcher;

use strata_tsdb::chunkenc::{append_xor_in_range, XorChunk};

use crate::{
    FloatHistogram, HistogramSamples, LazySamples, Samples, SelectHints, SelectedSeries, Storage,
    StorageError, StorageSeries,
};

/// Series kept in memory, sorted by labels; samples sorted by time.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: Mutex<BTreeMap<Labels, Vec<(i64, f64)>>>,
    /// Native histogram samples, by series (a series may have both kinds).
    hists: Mutex<BTreeMap<Labels, Vec<(i64, FloatHistogram)>>>,
    /// Answer `select_lazy` with decoded samples instead of chunks.
    decoded: bool,
}

/// Samples per chunk of a lazily answered series: small, so windows cross chunks.
const CHUNK_SAMPLES: usize = 7;

/// A series answered as XOR chunks, decoded when the engine loads it.
struct MemChunks {
    chunks: Vec<Vec<u8>>,
    mint: i64,
    maxt: i64,
}

impl LazySamples for MemChunks {
    fn decode_into(&self, out: &mut Vec<(i64, f64)>) -> Result<(), StorageError> {
        out.clear();
        for c in &self.chunks {
            append_xor_in_range(c, self.mint, self.maxt, out)
                .map_err(|e| StorageError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// A storage whose `select_lazy` answers decoded samples (the engine's eager path).
    pub fn decoded() -> Self {
        MemStorage {
            decoded: true,
            ..Default::default()
        }
    }

    /// Add samples to a series (merged by timestamp; a repeated timestamp keeps the
    /// new value).
    pub fn add(&self, labels: Labels, samples: impl IntoIterator<Item = (i64, f64)>) {
        let mut g = self.series.lock().unwrap();
        let s = g.entry(labels).or_default();
        s.extend(samples);
        s.sort_by_key(|p| p.0);
        let mut out: Vec<(i64, f64)> = Vec::with_capacity(s.len());
        for p in s.drain(..) {
            match out.last_mut() {
                Some(l) if l.0 == p.0 => *l = p,
                _ => out.push(p),
            }
        }
        *s = out;
    }

    /// Add float and histogram samples to a series; a timestamp keeps the newest sample
    /// of either kind.
    pub fn add_mixed(
        &self,
        labels: Labels,
        floats: Vec<(i64, f64)>,
        hists: Vec<(i64, FloatHistogram)>,
    ) {
        {
            let mut g = self.series.lock().unwrap();
            if let Some(s) = g.get_mut(&labels) {
                s.retain(|p| hists.binary_search_by_key(&p.0, |h| h.0).is_err());
            }
        }
        {
            let mut g = self.hists.lock().unwrap();
            let s = g.entry(labels.clone()).or_default();
            s.retain(|p| {
                floats.binary_search_by_key(&p.0, |f| f.0).is_err()
                    && hists.binary_search_by_key(&p.0, |h| h.0).is_err()
            });
            s.extend(hists);
            s.sort_by_key(|p| p.0);
            set_hints(s);
        }
        if !floats.is_empty() {
            self.add(labels, floats);
        }
    }

    pub fn clear(&self) {
        self.series.lock().unwrap().clear();
        self.hists.lock().unwrap().clear();
    }

    pub fn len(&self) -> usize {
        self.series.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Storage for MemStorage {
    fn select(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        _hints: &SelectHints,
    ) -> Result<Vec<StorageSeries>, StorageError> {
        let g = self.series.lock().unwrap();
        let gh = self.hists.lock().unwrap();
        let mut names: Vec<&Labels> = g.keys().chain(gh.keys()).collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for labels in names {
            if !matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
            {
                continue;
            }
            let samples: &[(i64, f64)] = g.get(labels).map_or(&[], |v| v.as_slice());
            let lo = samples.partition_point(|p| p.0 < mint);
            let hi = samples.partition_point(|p| p.0 <= maxt);
            let hs: &[(i64, FloatHistogram)] = gh.get(labels).map_or(&[], |v| v.as_slice());
            let hlo = hs.partition_point(|p| p.0 < mint);
            let hhi = hs.partition_point(|p| p.0 <= maxt);
            if lo >= hi && hlo >= hhi {
                continue;
            }
            out.push(StorageSeries {
                labels: labels.clone(),
                samples: samples[lo..hi].to_vec(),
                histograms: hs[hlo..hhi].to_vec(),
                resolution: 0,
            });
        }
        Ok(out)
    }

    fn select_lazy(
        &self,
        matchers: &[Matcher],
        mint: i64,
        maxt: i64,
        hints: &SelectHints,
    ) -> Result<Vec<SelectedSeries>, StorageError> {
        let series = self.select(matchers, mint, maxt, hints)?;
        Ok(if self.decoded {
            series.into_iter().map(SelectedSeries::from).collect()
        } else {
            series
                .into_iter()
                .map(|s| self.encode(s, mint, maxt))
                .collect()
        })
    }
}

impl MemStorage {
    fn encode(&self, s: StorageSeries, mint: i64, maxt: i64) -> SelectedSeries {
        let chunks = s
            .samples
            .chunks(CHUNK_SAMPLES)
            .map(|part| {
                let mut c = XorChunk::new();
                for &(t, v) in part {
                    c.append(t, v);
                }
                c.into_bytes()
            })
            .collect();
        SelectedSeries {
            labels: s.labels,
            samples: Samples::Lazy(Box::new(MemChunks { chunks, mint, maxt })),
            // No histogram chunk encoding here: histograms are answered decoded.
            histograms: if s.histograms.is_empty() {
                HistogramSamples::None
            } else {
                HistogramSamples::Decoded(s.histograms)
            },
            resolution: s.resolution,
        }
    }
}

/// Counter-reset hints as Prometheus's head answers them (its histogram chunk
/// iterator): gauge histograms stay gauges; the first histogram of a chunk is
/// `Unknown` (even a chunk cut for a counter reset: the previous chunk may be gone),
/// every other `NotCounterReset`. A chunk is cut at the first histogram of a run, at a
/// detected or declared reset, and where the schema, zero threshold or custom bounds
/// change.
fn set_hints(s: &mut [(i64, FloatHistogram)]) {
    use strata_tsdb::histogram::CounterResetHint as H;
    let mut prev: Option<FloatHistogram> = None;
    for (_, h) in s.iter_mut() {
        if h.counter_reset_hint == H::Gauge {
            prev = None;
            continue;
        }
        let new_chunk = match &prev {
            None => true,
            Some(p) => {
                h.counter_reset_hint == H::CounterReset
                    || crate::histogram::detect_reset(h, p)
                    || h.schema != p.schema
                    || h.zero_threshold != p.zero_threshold
                    || h.custom_values != p.custom_values
            }
        };
        let hint = if new_chunk {
            H::Unknown
        } else {
            H::NotCounterReset
        };
        h.counter_reset_hint = H::Unknown;
        prev = Some(h.clone());
        h.counter_reset_hint = hint;
    }
}
