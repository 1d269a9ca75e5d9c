//! The one shutdown sequence, the same in every service, so that every replica stops the
//! same way (nothing in flight lost, offsets committed) within the pod's grace period.
//!
//! The first SIGTERM or SIGINT triggers [`Shutdown`]: the runtime marks the replica
//! NOT_SERVING, consumers stop taking new records and commit what they handled, gRPC drains
//! in-flight calls. All of it shares one deadline, `CENTRALITA_SHUTDOWN_TIMEOUT` from the
//! first signal (see `server::Runtime::serve`), which the chart keeps below the pod's grace
//! period. A second signal exits at once.

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.token.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once shutdown has been triggered.
    pub async fn wait(&self) {
        self.token.cancelled().await
    }

    /// A shutdown that also fires when this one does, and can be triggered on its own.
    pub fn child(&self) -> Shutdown {
        Shutdown { token: self.token.child_token() }
    }

    /// Triggers on the first SIGTERM/SIGINT; exits the process on the second.
    pub fn on_signals(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            wait_signal().await;
            tracing::info!("shutdown signal received; draining (send again to exit now)");
            this.trigger();
            wait_signal().await;
            tracing::warn!("second shutdown signal; exiting now");
            std::process::exit(130);
        });
    }
}

async fn wait_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
