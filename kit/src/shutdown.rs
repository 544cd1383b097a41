//! A cloneable shutdown token, triggered by SIGTERM or SIGINT or by code.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let shutdown = strata_kit::shutdown::Shutdown::new();
//! let worker = {
//!     let shutdown = shutdown.clone();
//!     tokio::spawn(async move { shutdown.wait().await; "stopped" })
//! };
//! shutdown.trigger();
//! assert_eq!(worker.await.unwrap(), "stopped");
//! # }
//! ```

use std::sync::Arc;

use tokio::sync::watch;

/// Every clone observes the same trigger; [`Shutdown::wait`] resolves at once when it
/// has already fired.
#[derive(Clone, Debug)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A token that fires only when [`Shutdown::trigger`] is called.
    pub fn new() -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(false)),
        }
    }

    /// A token that also fires on SIGTERM or SIGINT (Ctrl-C). Must be called inside a
    /// tokio runtime.
    pub fn with_signals() -> Self {
        let s = Self::new();
        s.listen_for_signals();
        s
    }

    /// Fire on the first SIGTERM or SIGINT, logging which. Must be called inside a tokio
    /// runtime. The handlers are installed before this returns and stay installed for the
    /// life of the process (a second signal no longer kills it).
    pub fn listen_for_signals(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let signals = Signals::install();
        tokio::spawn(async move {
            let signal = signals.recv().await;
            tracing::info!(signal, "received signal, shutting down");
            this.trigger();
        })
    }

    /// Fire the token; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the token has fired.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolve once the token has fired.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // Only errs when the sender is dropped, and `self` holds it.
        let _ = rx.wait_for(|fired| *fired).await;
    }

    /// [`Shutdown::wait`] as a `'static` future, for APIs that need one
    /// (e.g. `with_graceful_shutdown`).
    pub async fn wait_owned(self) {
        self.wait().await
    }
}

#[cfg(unix)]
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{signal, SignalKind};
        let open = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                None
            }
        };
        Self {
            term: open(SignalKind::terminate(), "SIGTERM"),
            int: open(SignalKind::interrupt(), "SIGINT"),
        }
    }

    async fn recv(mut self) -> &'static str {
        async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.term) => "SIGTERM",
            _ = next(&mut self.int) => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Self {
        Signals
    }

    async fn recv(self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "SIGINT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        s.clone().trigger();
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(s.is_triggered());
        // Already fired: resolves immediately, and triggering again is harmless.
        s.trigger();
        tokio::time::timeout(Duration::from_secs(5), s.wait())
            .await
            .unwrap();
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn sigterm_triggers() {
        let s = Shutdown::new();
        // The handler is installed when this returns, so the signal cannot kill us.
        let task = s.listen_for_signals();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &std::process::id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(5), s.wait())
            .await
            .unwrap();
        task.await.unwrap();
    }
}
