//! Orion's end-to-end and contract tests: one binary, one module per subject.
//!
//! Everything here talks to real services on loopback — NATS with JetStream, Postgres —
//! which `scripts/services.sh` starts. Each test takes its own subject prefix, streams and
//! database, so tests run in parallel without seeing each other.

mod analysis;
mod api;
mod bus_contract;
mod chaos;
mod cli;
mod cluster;
mod code_intel;
mod dashboard;
mod deploy;
mod develop;
mod devops;
mod faults;
mod forges;
mod gate;
mod llm;
mod mcp;
mod plugins;
mod remotes;
mod replication;
mod reviews;
mod runtime;
mod sandbox;
mod security;
mod store;
mod stream;
mod support;
mod vcs;
