//! The ids of queued messages, in one place: JetStream de-duplicates a message by its id, so
//! each id names exactly what may not be queued twice (a task's submission per attempt, an
//! assignment per attempt, a report per state of a step). One constructor a kind of message;
//! the formats are part of the wire (a redelivered publication must repeat its id).

use std::fmt;

use crate::{Step, TaskId};

/// A queued message's de-duplication id (`Nats-Msg-Id`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MessageId(String);

impl MessageId {
    /// A task put on the coordinators' queue, once per attempt.
    pub fn submission(task: TaskId, attempt: i32) -> Self {
        Self(format!("submitted-{task}-{attempt}"))
    }

    /// A task's assignment to an agent pool, once per attempt.
    pub fn assignment(task: TaskId, attempt: i32) -> Self {
        Self(format!("assign-{task}-{attempt}"))
    }

    /// A step handed from one agent to another, once per attempt and step.
    pub fn handoff(task: TaskId, attempt: i32, step: &Step) -> Self {
        Self(format!("handoff-{task}-{attempt}-{}", step.name()))
    }

    /// A paused task resumed (its budget or a cap raised), once per pause: `mark` is the
    /// pause's event sequence number (the resume's order), or the task's version once it runs
    /// again (the step's assignment). Within one attempt a task may pause and resume again
    /// and again; each resume is a message of its own.
    pub fn resume(task: TaskId, mark: i64) -> Self {
        Self(format!("resume-{task}-{mark}"))
    }

    /// A review, on its way to the coordinators.
    pub fn review(review: uuid::Uuid) -> Self {
        Self(format!("review-{review}"))
    }

    /// The step a review leads to (merge or revise), once per review.
    pub fn review_step(review: uuid::Uuid) -> Self {
        Self(format!("review-step-{review}"))
    }

    /// An agent's report of `state` (`started`, `completed`, `progress-<key>` …) of a step.
    pub fn report(task: TaskId, attempt: i32, step: &Step, state: &str) -> Self {
        Self(format!("report-{task}-{attempt}-{}-{state}", step.name()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::ops::Deref for MessageId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formats are the wire's: a change would let a redelivered publication through the
    /// de-duplication window.
    #[test]
    fn ids_keep_their_wire_formats() {
        let task: TaskId = "01a24302-2c67-7605-87bd-0a497841f1fd".parse().unwrap();
        let review: uuid::Uuid = "01a24302-3198-7475-a097-ded4c00d026e".parse().unwrap();
        assert_eq!(
            MessageId::submission(task, 1).as_str(),
            "submitted-01a24302-2c67-7605-87bd-0a497841f1fd-1"
        );
        assert_eq!(
            MessageId::assignment(task, 2).as_str(),
            "assign-01a24302-2c67-7605-87bd-0a497841f1fd-2"
        );
        assert_eq!(
            MessageId::report(task, 1, &Step::Work, "completed").as_str(),
            "report-01a24302-2c67-7605-87bd-0a497841f1fd-1-work-completed"
        );
        assert_eq!(
            MessageId::review_step(review).as_str(),
            "review-step-01a24302-3198-7475-a097-ded4c00d026e"
        );
        assert_ne!(MessageId::review(review), MessageId::review_step(review));
    }
}
