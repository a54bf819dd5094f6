//! The `orion` binary's wiring: settings, the services a process connects to, the node and
//! gateway it starts, and the CLI commands. No behaviour of Orion lives here; it is all in
//! the member crates.

pub mod app;
pub mod cli;
mod commands;
mod output;
pub mod settings;
pub mod telemetry;
