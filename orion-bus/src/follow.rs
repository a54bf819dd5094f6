//! Keeping a subscription alive across outages: one loop for every follower of a subject
//! (a node's control orders, the gateway's heartbeats, an agent kind's requests).

use std::future::Future;
use std::time::Duration;

use crate::BusError;

/// Opens a subscription with `open`, hands it to `consume` until it ends, and opens it again
/// `retry` later, for as long as the returned future is polled. An opening that fails is
/// logged as `what` and tried again after `retry`.
pub async fn follow<S, O, OF, C, CF>(what: &str, retry: Duration, mut open: O, mut consume: C)
where
    O: FnMut() -> OF,
    OF: Future<Output = Result<S, BusError>>,
    C: FnMut(S) -> CF,
    CF: Future<Output = ()>,
{
    loop {
        match open().await {
            Ok(stream) => {
                consume(stream).await;
                tracing::info!(what, "a subscription ended; opening it again");
            }
            Err(e) => tracing::warn!(what, error = %e, "cannot subscribe; retrying"),
        }
        tokio::time::sleep(retry).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Openings that fail are retried; a subscription that ends is opened again; every item
    /// of every opening is consumed.
    #[tokio::test]
    async fn a_subscription_is_opened_again_after_failures_and_ends() {
        let opened = Arc::new(AtomicUsize::new(0));
        let consumed = Arc::new(AtomicUsize::new(0));
        let (o, c) = (opened.clone(), consumed.clone());
        let following = follow(
            "test",
            Duration::from_millis(1),
            move || {
                let n = o.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(BusError::unavailable("test", "down"))
                    } else {
                        Ok(vec![1, 2])
                    }
                }
            },
            move |items: Vec<i32>| {
                let c = c.clone();
                async move {
                    c.fetch_add(items.len(), Ordering::SeqCst);
                }
            },
        );
        let watched = async {
            while consumed.load(Ordering::SeqCst) < 6 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::select! {
            () = following => unreachable!("follow never returns"),
            () = watched => {}
        }
        assert!(
            opened.load(Ordering::SeqCst) >= 5,
            "two failures, then three openings"
        );
    }
}
