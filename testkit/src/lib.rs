//! Test harness shared by Strata's tests: finds or starts the real programs they run
//! against (the `strata` binary, Prometheus, promtool, an S3 server), polls them until
//! ready, and makes fixtures such as generated OpenMetrics files.

pub mod gen;
pub mod http;
pub mod procs;
pub mod s3;
pub mod strata;
