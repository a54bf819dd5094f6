//! Orion's gateway: the REST API under `/v1`, the WebSocket event stream, health and the
//! OpenAPI document.
//!
//! Thin by design: handlers parse and check input, then call the task lifecycle (which
//! writes the store and publishes on the bus) or read the store, and answer. The gateway
//! never talks to actors; agents on any node are reached through the bus only. Every error
//! is `application/problem+json` with a stable `code` from one registry ([`ApiError`]).

pub mod auth;
mod body;
mod error;
pub mod mcp;
pub mod nodes;
mod routes;
mod startup;
mod state;

pub use actix_web::dev::Server;
pub use error::ApiError;
pub use startup::{run, run_metrics};
pub use state::{AppState, GatewayConfig, StreamLimits};
