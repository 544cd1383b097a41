//! Test harness shared by Strata's tests: finds or starts the real programs they run
//! against (the `strata` binary, Prometheus, promtool, an S3 server), polls them until
//! ready, and makes fixtures such as generated OpenMetrics files.

pub mod alertmanager;
pub mod gen;
pub mod http;
pub mod procs;
pub mod s3;
pub mod storeapi_acceptance;
pub mod strata;
pub mod tls;

/// Call `f` every 200 ms until it returns `Some`, failing the test with `what` after
/// `timeout`: waiting on a condition, never on the clock.
pub fn poll<T>(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
