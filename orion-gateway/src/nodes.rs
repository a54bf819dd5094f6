//! The cluster as the gateway sees it: the last heartbeat of every node, from
//! `<prefix>.health.*` (the same subject any external monitor may watch).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use orion_bus::{Body, Bus, HEARTBEAT_INTERVAL, Heartbeat};
use serde::Serialize;

/// A node missing this many heartbeats is `suspect`; twice as many, `dead`.
const SUSPECT_AFTER_BEATS: u32 = 3;

/// How long to wait before subscribing again when the bus is down.
const RESUBSCRIBE: Duration = Duration::from_secs(2);

/// Each node's latest heartbeat, and when it arrived here.
type Seen = BTreeMap<String, (Heartbeat, DateTime<Utc>)>;

/// The latest heartbeat of each node.
#[derive(Clone, Default)]
pub struct NodeView {
    seen: Arc<RwLock<Seen>>,
}

/// How a node seems, by the age of its last heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Healthy,
    /// Alive, finishing its work and taking no more.
    Draining,
    Suspect,
    Dead,
}

impl NodeState {
    /// `healthy` within three heartbeat intervals, `suspect` within six, `dead` after.
    pub fn of(age: Duration) -> Self {
        let suspect = HEARTBEAT_INTERVAL * SUSPECT_AFTER_BEATS;
        if age <= suspect {
            NodeState::Healthy
        } else if age <= suspect * 2 {
            NodeState::Suspect
        } else {
            NodeState::Dead
        }
    }
}

/// One node as `GET /v1/agents` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub agents: Vec<orion_bus::AgentKind>,
    pub in_flight: u32,
    pub last_heartbeat: DateTime<Utc>,
    pub age_ms: i64,
    pub state: NodeState,
}

impl NodeView {
    /// Keeps the view up to date from the bus, for as long as the process runs.
    pub fn watch(&self, bus: Arc<dyn Bus>) {
        let seen = self.seen.clone();
        actix_web::rt::spawn(async move {
            let pattern = bus.subjects().health_all();
            orion_bus::follow(
                "node heartbeats",
                RESUBSCRIBE,
                || bus.subscribe(&pattern),
                |mut beats| {
                    let seen = seen.clone();
                    async move {
                        while let Some((_, envelope)) = beats.next().await {
                            if let Body::Heartbeat(beat) = envelope.body {
                                let mut seen = seen.write().unwrap_or_else(|p| p.into_inner());
                                seen.insert(beat.node.clone(), (beat, Utc::now()));
                            }
                        }
                    }
                },
            )
            .await
        });
    }

    /// Every node heard from, by name.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let now = Utc::now();
        let seen = self.seen.read().unwrap_or_else(|p| p.into_inner());
        seen.values()
            .map(|(beat, received)| {
                let age = (now - *received).to_std().unwrap_or_default();
                NodeStatus {
                    node: beat.node.clone(),
                    agents: beat.agents.clone(),
                    in_flight: beat.in_flight,
                    last_heartbeat: *received,
                    age_ms: age.as_millis() as i64,
                    state: match NodeState::of(age) {
                        NodeState::Healthy if beat.draining => NodeState::Draining,
                        state => state,
                    },
                }
            })
            .collect()
    }
}

/// For every agent kind, how many healthy nodes serve it (work in flight is per node: a
/// heartbeat counts a node's deliveries, not its agents').
pub fn healthy_per_kind(nodes: &[NodeStatus]) -> BTreeMap<orion_bus::AgentKind, u32> {
    let mut kinds: BTreeMap<orion_bus::AgentKind, u32> =
        orion_bus::AgentKind::ALL.iter().map(|k| (*k, 0)).collect();
    for node in nodes.iter().filter(|n| n.state == NodeState::Healthy) {
        for agent in &node.agents {
            *kinds.entry(*agent).or_default() += 1;
        }
    }
    kinds
}

/// Sends `command` to `node` on `<p>.control.<node>` (core NATS: a node that is not
/// listening does not get it).
pub async fn order(
    lifecycle: &orion_services::lifecycle::Lifecycle,
    node: &str,
    command: orion_bus::ControlCommand,
) -> Result<(), orion_bus::BusError> {
    let envelope = orion_bus::Envelope::new(lifecycle.node(), orion_bus::Body::Control(command));
    let bus = lifecycle.bus();
    bus.publish(&bus.subjects().control(node), &envelope).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_grows_suspect_then_dead_as_heartbeats_stop() {
        let beat = HEARTBEAT_INTERVAL;
        assert_eq!(NodeState::of(Duration::ZERO), NodeState::Healthy);
        assert_eq!(NodeState::of(beat * 3), NodeState::Healthy);
        assert_eq!(
            NodeState::of(beat * 3 + Duration::from_millis(1)),
            NodeState::Suspect
        );
        assert_eq!(NodeState::of(beat * 6), NodeState::Suspect);
        assert_eq!(NodeState::of(beat * 7), NodeState::Dead);
    }
}
