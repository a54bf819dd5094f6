//! The two transports and what they share: the decision of what to do with a delivery.

mod inproc;
mod nats;

pub use inproc::InProcessBus;
pub use nats::{NatsBus, NatsSecurity};

use crate::bus::BusConfig;
use crate::envelope::Envelope;

/// What a transport does with a message it is about to deliver.
enum Triage {
    Deliver(Box<Envelope>),
    /// Dead-letter it with this reason and acknowledge it.
    Dead(String),
}

/// The one rule both transports apply before handing a message to a consumer.
fn triage(payload: &[u8], attempt: u32, config: &BusConfig) -> Triage {
    if attempt > config.max_deliver {
        return Triage::Dead(format!(
            "delivered {} times without acknowledgement (max_deliver = {})",
            attempt - 1,
            config.max_deliver
        ));
    }
    match Envelope::decode(payload, config.max_message_bytes) {
        Ok(envelope) => Triage::Deliver(Box::new(envelope)),
        Err(e) => Triage::Dead(e.to_string()),
    }
}
