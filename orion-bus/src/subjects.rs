//! Subject and stream names. Every name Orion puts on NATS is spelled here and only here.

use crate::error::ProtocolError;
use crate::protocol::{AgentKind, EventType, Priority, TaskId};

/// Subject names under one prefix (default `orion`), so tests and tenants share a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

/// The JetStream streams Orion creates, one per family of durable subjects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFamily {
    Tasks,
    Work,
    Results,
    Events,
    Dead,
}

impl Subjects {
    /// Accepts a prefix of letters, digits, `-` and `_` (one subject token).
    pub fn new(prefix: impl Into<String>) -> Result<Self, ProtocolError> {
        let prefix = prefix.into();
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(Self { prefix })
        } else {
            Err(ProtocolError::InvalidPrefix(prefix))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `<p>.tasks.submitted`: the gateway's work queue to the coordinators.
    pub fn tasks_submitted(&self) -> String {
        format!("{}.tasks.submitted", self.prefix)
    }

    /// `<p>.work.<agent>.<priority>`: assignments for one agent pool.
    pub fn work(&self, agent: AgentKind, priority: Priority) -> String {
        format!("{}.work.{agent}.{priority}", self.prefix)
    }

    /// `<p>.work.<agent>.*`: every priority of one pool.
    pub fn work_of(&self, agent: AgentKind) -> String {
        format!("{}.work.{agent}.*", self.prefix)
    }

    /// `<p>.results`: agents' reports to the coordinators.
    pub fn results(&self) -> String {
        format!("{}.results", self.prefix)
    }

    /// `<p>.events.<task>.<type>`.
    pub fn event(&self, task: TaskId, event: EventType) -> String {
        format!("{}.events.{task}.{event}", self.prefix)
    }

    /// `<p>.events.>`: every event of every task.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.prefix)
    }

    /// `<p>.events.*.<type>`: every event of one type, of every task.
    pub fn events_of_type(&self, event: EventType) -> String {
        format!("{}.events.*.{event}", self.prefix)
    }

    /// `<p>.events.<task>.*`: every event of one task.
    pub fn events_of(&self, task: TaskId) -> String {
        format!("{}.events.{task}.*", self.prefix)
    }

    /// `<p>.health.<node>`.
    pub fn health(&self, node: &str) -> String {
        format!("{}.health.{node}", self.prefix)
    }

    /// `<p>.health.*`.
    pub fn health_all(&self) -> String {
        format!("{}.health.*", self.prefix)
    }

    /// `<p>.rpc.<agent>`: requests to an agent pool, answered by one of its agents.
    pub fn rpc(&self, agent: AgentKind) -> String {
        format!("{}.rpc.{agent}", self.prefix)
    }

    /// `<p>.control.<node>`.
    pub fn control(&self, node: &str) -> String {
        format!("{}.control.{node}", self.prefix)
    }

    /// `<p>.dead.<rest>`: where a message from `<p>.<rest>` goes when it cannot be handled.
    pub fn dead(&self, subject: &str) -> String {
        let rest = subject
            .strip_prefix(&self.prefix)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject);
        format!("{}.dead.{rest}", self.prefix)
    }

    /// `<p>.dead.>`.
    pub fn dead_all(&self) -> String {
        format!("{}.dead.>", self.prefix)
    }

    /// The JetStream stream of a family: `<PREFIX>_<FAMILY>` (stream names allow no dots).
    pub fn stream(&self, family: StreamFamily) -> String {
        let name = match family {
            StreamFamily::Tasks => "TASKS",
            StreamFamily::Work => "WORK",
            StreamFamily::Results => "RESULTS",
            StreamFamily::Events => "EVENTS",
            StreamFamily::Dead => "DEAD",
        };
        format!(
            "{}_{name}",
            self.prefix.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// The subjects a stream captures.
    pub fn stream_subjects(&self, family: StreamFamily) -> String {
        match family {
            StreamFamily::Tasks => self.tasks_submitted(),
            StreamFamily::Work => format!("{}.work.>", self.prefix),
            StreamFamily::Results => self.results(),
            StreamFamily::Events => self.events_all(),
            StreamFamily::Dead => self.dead_all(),
        }
    }
}

/// NATS subject matching: `*` matches one token, a trailing `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_follow_nats() {
        assert!(subject_matches("o.events.>", "o.events.t1.queued"));
        assert!(!subject_matches("o.events.>", "o.events"));
        assert!(subject_matches("o.work.analyzer.*", "o.work.analyzer.high"));
        assert!(!subject_matches(
            "o.work.analyzer.*",
            "o.work.analyzer.high.x"
        ));
        assert!(!subject_matches("o.work.*", "o.results"));
    }

    #[test]
    fn names_are_prefixed_and_streams_are_valid() {
        let s = Subjects::new("t-1").unwrap();
        assert_eq!(s.stream(StreamFamily::Work), "T_1_WORK");
        assert_eq!(
            s.dead("t-1.work.analyzer.low"),
            "t-1.dead.work.analyzer.low"
        );
        assert!(Subjects::new("a.b").is_err());
        assert!(Subjects::new("").is_err());
    }
}
