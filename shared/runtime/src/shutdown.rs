//! One cancellation token per process, cancelled on SIGINT or SIGTERM, and a bound on how
//! long the stop that follows may take.
//!
//! The bound is what makes `--shutdown-timeout` a promise: draining connections, the last
//! flush and the final commits all talk to servers that may be gone (a broker that stopped
//! first can hold a Kafka client's close for many seconds). When the deadline passes, the
//! process exits with status 1 as if it had crashed, which every consumer here is built to
//! survive: offsets are committed only after their output is durable.

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGINT or SIGTERM; from then
/// on the process has `deadline` to finish before it is exited.
pub fn on_signals(deadline: Duration) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
        t.cancel();
        exit_after(deadline);
    });
    token
}

/// Exits the process with status 1 once `deadline` has passed, on a thread of its own so that
/// a blocked runtime cannot hold it back.
fn exit_after(deadline: Duration) {
    let spawned = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::error!(
                ?deadline,
                "the stop did not finish within --shutdown-timeout: exiting now"
            );
            std::process::exit(1);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot bound the shutdown: no deadline thread");
    }
}
