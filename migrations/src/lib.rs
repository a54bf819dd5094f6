//! Orion's database schema as sea-orm migrations, one file per migration.
//!
//! Every migration is written with sea-query's schema builder only, so the same files run on
//! Postgres (cluster mode) and SQLite (embedded mode). `orion migrate` applies them, and
//! every process that opens a store applies pending ones at start.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_spine;
mod m20261125_000002_task_diff;
mod m20261125_000003_pull_requests;
mod m20261125_000004_effects_and_usage;
mod m20261125_000005_task_budget;
mod m20261125_000006_access;
mod m20261126_000007_task_input;
mod m20261204_000008_effect_claims;
mod m20261205_000009_task_origin;
mod m20261205_000010_task_functions;
mod m20261205_000011_spending_caps;

/// The ordered list of Orion's migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_spine::Migration),
            Box::new(m20261125_000002_task_diff::Migration),
            Box::new(m20261125_000003_pull_requests::Migration),
            Box::new(m20261125_000004_effects_and_usage::Migration),
            Box::new(m20261125_000005_task_budget::Migration),
            Box::new(m20261125_000006_access::Migration),
            Box::new(m20261126_000007_task_input::Migration),
            Box::new(m20261204_000008_effect_claims::Migration),
            Box::new(m20261205_000009_task_origin::Migration),
            Box::new(m20261205_000010_task_functions::Migration),
            Box::new(m20261205_000011_spending_caps::Migration),
        ]
    }
}
