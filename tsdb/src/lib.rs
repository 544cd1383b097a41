//! The storage core every Strata component shares: labels with string interning,
//! label matchers with Prometheus's regex semantics, XOR (Gorilla) chunks and native
//! histogram chunks (integer and float) byte-compatible with Prometheus's `chunkenc`, the
//! in-memory head and its WAL, and a reader and writer for the Prometheus TSDB block
//! format (`meta.json`, `index` v2, `chunks/NNNNNN`, `tombstones`).
//!
//! ```
//! use strata_tsdb::labels::Labels;
//! use strata_tsdb::matcher::{Matcher, MatchOp};
//!
//! let series = Labels::from_pairs([("__name__", "up"), ("job", "node")]);
//! let m = Matcher::new(MatchOp::RegexMatch, "job", "no.*").unwrap();
//! assert!(m.matches(series.get("job").unwrap_or("")));
//! assert_eq!(series.to_string(), r#"{__name__="up", job="node"}"#);
//! ```

pub mod analyze;
pub mod backfill;
pub mod block;
pub mod chunkenc;
pub mod chunks;
pub mod dedup;
pub mod downsample;
pub mod error;
pub mod exemplars;
pub mod head;
pub mod histogram;
pub mod index;
pub mod labels;
pub mod matcher;
pub mod meta;
pub mod openmetrics;
pub mod postings;
pub mod tombstones;
pub mod varint;
pub mod wal;

pub use error::{Error, Result};
