use thiserror::Error;

/// Why a value or a message does not conform to the protocol.
///
/// Each variant is a distinct, stable reason: the gateway maps them to API error codes and
/// the transports write them into dead letters.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    #[error(
        "unknown task kind `{0}`; expected one of develop, review, analyze, test, design, ci, release, auto, or a kind declared in `[plugins]`"
    )]
    UnknownTaskKind(String),
    #[error(
        "unknown agent kind `{0}`; expected one of coordinator, developer, analyzer, testing, devops, architect"
    )]
    UnknownAgentKind(String),
    #[error("unknown priority `{0}`; expected one of low, normal, high, urgent")]
    UnknownPriority(String),
    #[error("unknown event type `{0}`")]
    UnknownEventType(String),
    #[error("unknown task status `{0}`")]
    UnknownStatus(String),
    #[error("`{0}` is not a valid task id (a UUID)")]
    InvalidTaskId(String),
    #[error("the task's input does not fit its kind: {0}")]
    InvalidInput(String),
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("unsupported schema version {0}")]
    UnsupportedVersion(u64),
    #[error("unknown message type `{0}`")]
    UnknownType(String),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("invalid subject prefix `{0}`: use letters, digits, `-` and `_`")]
    InvalidPrefix(String),
}

/// The coarse class of a bus failure, for callers that decide between retrying and giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusErrorKind {
    /// The server could not be reached or answered with an error; retrying may help.
    Unavailable,
    /// The message itself is at fault; retrying will not help.
    Protocol,
}

/// A failure of a [`crate::Bus`] operation.
#[derive(Debug, Error)]
pub enum BusError {
    #[error("bus unavailable while {context}: {source}")]
    Unavailable {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no answer on {subject} within {after:?}")]
    Timeout {
        subject: String,
        after: std::time::Duration,
    },
    #[error("nothing serves {0}")]
    NoResponders(String),
}

impl BusError {
    pub(crate) fn unavailable(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            context,
            source: source.into(),
        }
    }

    pub fn kind(&self) -> BusErrorKind {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::NoResponders(_) => {
                BusErrorKind::Unavailable
            }
            Self::Protocol(_) => BusErrorKind::Protocol,
        }
    }
}
