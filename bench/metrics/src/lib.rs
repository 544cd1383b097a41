//! Benchmarks only: see benches/registry.rs.
