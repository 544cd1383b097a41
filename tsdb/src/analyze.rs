//! Block statistics for `tools tsdb analyze`: sizes, bytes per sample, and the
//! cardinality tables an operator reads during a series explosion.

use std::collections::HashMap;

use crate::block::Block;
use crate::error::Result;
use crate::labels::METRIC_NAME;

/// What `analyze` reports for one block. Lists are sorted by count, largest first.
#[derive(Debug, Default)]
pub struct BlockStats {
    pub series: u64,
    pub samples: u64,
    pub chunks: u64,
    pub index_bytes: u64,
    pub chunk_bytes: u64,
    pub label_names: u64,
    /// Distinct label name/value pairs (postings lists, excluding the all-postings one).
    pub label_pairs: u64,
    /// Sum of the lengths of every postings list.
    pub postings_entries: u64,
    /// (series, metric name)
    pub series_by_metric: Vec<(u64, String)>,
    /// (distinct values, label name)
    pub values_by_label: Vec<(u64, String)>,
    /// (series carrying the label, label name)
    pub series_by_label: Vec<(u64, String)>,
    /// (series, `name=value`)
    pub series_by_pair: Vec<(u64, String)>,
    /// (total bytes of all values, label name)
    pub value_bytes_by_label: Vec<(u64, String)>,
}

fn sorted(m: HashMap<String, u64>) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = m.into_iter().map(|(k, n)| (n, k)).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    v
}

/// Walk the block's index (and chunk headers, for sample counts).
pub fn analyze(block: &Block) -> Result<BlockStats> {
    let ir = block.index();
    let mut st = BlockStats {
        index_bytes: ir.size(),
        chunk_bytes: block.chunks().size(),
        ..BlockStats::default()
    };
    for r in ir.all_postings()? {
        let (_, chunks) = ir.series(r)?;
        st.series += 1;
        for c in chunks {
            st.chunks += 1;
            let (_, data) = block.chunks().chunk(c.chunk_ref)?;
            if data.len() >= 2 {
                st.samples += u64::from(u16::from_be_bytes([data[0], data[1]]));
            }
        }
    }
    let mut series_by_metric = HashMap::new();
    let mut values_by_label = HashMap::new();
    let mut series_by_label = HashMap::new();
    let mut series_by_pair = HashMap::new();
    let mut value_bytes = HashMap::new();
    for name in ir.label_names() {
        if name.is_empty() {
            continue;
        }
        st.label_names += 1;
        let values = ir.label_values(name)?;
        values_by_label.insert(name.to_string(), values.len() as u64);
        let mut with_label = 0u64;
        let mut bytes = 0u64;
        for v in values {
            let n = ir.postings(name, v)?.len() as u64;
            st.label_pairs += 1;
            st.postings_entries += n;
            with_label += n;
            bytes += v.len() as u64;
            if name == METRIC_NAME {
                series_by_metric.insert(v.to_string(), n);
            }
            series_by_pair.insert(format!("{name}={v}"), n);
        }
        series_by_label.insert(name.to_string(), with_label);
        value_bytes.insert(name.to_string(), bytes);
    }
    st.series_by_metric = sorted(series_by_metric);
    st.values_by_label = sorted(values_by_label);
    st.series_by_label = sorted(series_by_label);
    st.series_by_pair = sorted(series_by_pair);
    st.value_bytes_by_label = sorted(value_bytes);
    Ok(st)
}
