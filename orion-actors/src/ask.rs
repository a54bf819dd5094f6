//! Requests between actors on any nodes: `ask` sends a question to an agent pool over the
//! bus (`<p>.rpc.<agent>`, NATS request/reply) and waits for one agent's answer; the
//! [`crate::BusBridge`] of every node serving that pool hands it to one of its agents.

use std::time::Duration;

use orion_bus::{AgentKind, AgentReply, AgentRequest, Body, Bus, BusError, Envelope, TaskFailure};

/// Why an `ask` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no {0} agent is running on any node")]
    NoAgent(AgentKind),
    #[error("the {agent} agents did not answer within {after:?}")]
    Timeout { agent: AgentKind, after: Duration },
    #[error("the {agent} agent refused: {} ({})", .failure.message, .failure.code)]
    Refused {
        agent: AgentKind,
        failure: TaskFailure,
    },
    #[error("the answer was not an agent's reply but `{0}`")]
    NotAReply(&'static str),
    #[error(transparent)]
    Bus(BusError),
}

/// Asks one `agent` of the cluster to do `op` with `args`, from `node`; waits up to
/// `timeout`.
pub async fn ask(
    bus: &dyn Bus,
    node: &str,
    agent: AgentKind,
    op: &str,
    args: serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, AskError> {
    let request = Envelope::new(
        node,
        Body::Request(AgentRequest {
            agent,
            op: op.to_owned(),
            args,
        }),
    );
    let answer = bus
        .request(&bus.subjects().rpc(agent), &request, timeout)
        .await
        .map_err(|e| match e {
            BusError::NoResponders(_) => AskError::NoAgent(agent),
            BusError::Timeout { after, .. } => AskError::Timeout { agent, after },
            other => AskError::Bus(other),
        })?;
    match answer.body {
        Body::Reply(AgentReply::Answer { value }) => Ok(value),
        Body::Reply(AgentReply::Refused { failure }) => Err(AskError::Refused { agent, failure }),
        _ => Err(AskError::NotAReply(answer.type_name())),
    }
}
