//! Prometheus durations ([`duration`]) and RFC 3339 dates ([`date`]): one copy of each,
//! used by flags (through `strata_kit`), the query API, PromQL's date functions and
//! test runner, and the tools. Kept free of heavy dependencies so `strata-promql` can
//! use it without `strata-kit`'s HTTP stack.

pub mod date;
pub mod duration;
