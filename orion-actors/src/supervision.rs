//! Supervision: every actor of a node (the coordinator, the bridge to the bus, each agent)
//! runs under `actix::Supervisor`, which restarts it when it stops. Like an Erlang
//! supervisor's intensity, a restart rate bounds it: an actor restarted more than
//! [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] is crash-looping, and restarting it again
//! would only hide that; the node stops instead (its process exits non-zero, so whatever runs
//! it, Kubernetes or a person, sees it), and its unacknowledged work goes to other nodes.
//!
//! The stop is a signal, [`crash_looped`], that the process's serving loop waits on beside
//! SIGTERM: stopping the actix `System` would not end a process whose runtime is driven by
//! `block_on`, as Orion's is.

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Restarts allowed within [`RESTART_WINDOW`] before the node gives up.
pub const MAX_RESTARTS: usize = 10;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The exit code of a node stopped by a crash-looping actor (EX_SOFTWARE).
pub const CRASH_LOOP_EXIT: u8 = 70;

/// The restarts of one actor within the window.
#[derive(Debug, Clone)]
pub struct RestartLimit {
    max: usize,
    window: Duration,
    recent: VecDeque<Instant>,
}

impl Default for RestartLimit {
    fn default() -> Self {
        Self::new(MAX_RESTARTS, RESTART_WINDOW)
    }
}

impl RestartLimit {
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            recent: VecDeque::new(),
        }
    }

    /// Counts a restart at `now`; `false` once more than `max` fall within the window.
    pub fn allow(&mut self, now: Instant) -> bool {
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max
    }
}

/// Whether an actor of this process has crash-looped (one node runs per process).
fn crash_loop() -> &'static watch::Sender<bool> {
    static SIGNAL: OnceLock<watch::Sender<bool>> = OnceLock::new();
    SIGNAL.get_or_init(|| watch::channel(false).0)
}

/// Resolves once an actor of this process has crash-looped: the process then exits with
/// [`CRASH_LOOP_EXIT`].
pub async fn crash_looped() {
    let mut crashed = crash_loop().subscribe();
    // The sender is a static, never dropped: waiting ends only when the flag is set.
    let _ = crashed.wait_for(|crashed| *crashed).await;
}

/// Logs and counts a restart of `actor`; past the rate limit, stops the node.
pub(crate) fn restarting(limit: &mut RestartLimit, actor: &str, node: &str) {
    orion_services::metrics::metrics()
        .agent_restarts
        .with_label_values(&[actor])
        .inc();
    if limit.allow(Instant::now()) {
        tracing::warn!(actor, node, "actor restarting");
    } else {
        tracing::error!(
            actor,
            node,
            max = MAX_RESTARTS,
            window_secs = RESTART_WINDOW.as_secs(),
            "actor crash-looping: the node stops"
        );
        crash_loop().send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_beyond_the_rate_within_the_window_are_refused_and_old_ones_forgotten() {
        let mut limit = RestartLimit::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for n in 0..3 {
            assert!(limit.allow(start + Duration::from_secs(n)), "restart {n}");
        }
        assert!(
            !limit.allow(start + Duration::from_secs(4)),
            "a fourth within 10 s"
        );
        // Eleven seconds on, the first ones have left the window.
        assert!(limit.allow(start + Duration::from_secs(15)));
        assert!(limit.allow(start + Duration::from_secs(16)));
    }

    #[test]
    fn an_actor_restarted_past_the_rate_signals_its_process_to_stop() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let waiting = runtime.spawn(crash_looped());
        let mut limit = RestartLimit::default();
        for n in 0..MAX_RESTARTS {
            restarting(&mut limit, "crashing", "test-node");
            assert!(!*crash_loop().borrow(), "stopped after restart {}", n + 1);
        }
        restarting(&mut limit, "crashing", "test-node");
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), waiting).await })
            .expect("the process is told to stop")
            .unwrap();
        // A caller that starts waiting after the signal is not left waiting.
        runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), crash_looped()).await })
            .expect("the signal stays set");
    }
}
