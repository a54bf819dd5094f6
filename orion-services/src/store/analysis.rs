//! Every function an analyze task measured, in the store: the per-function data of its report.

use async_trait::async_trait;
use orion_bus::TaskId;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set};
use uuid::Uuid;

use super::entity::{task, task_function};
use super::{AnalysisStore, SqlStore, StoreError};
use crate::code::export::FunctionRow;

/// Rows per insert statement: 12 columns each, well under the 32,766 bound parameters
/// SQLite and the 65,535 Postgres allow in one statement.
const INSERT_CHUNK: usize = 1000;

/// Text as Postgres can hold it: NUL, which no text column takes, becomes U+FFFD.
fn text(value: &str) -> String {
    value.replace('\0', "\u{FFFD}")
}

fn column(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn count(value: i32, what: &str) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what} {value}")))
}

fn to_row(m: task_function::Model) -> Result<(u32, FunctionRow), StoreError> {
    let language = serde_json::from_value(serde_json::Value::String(m.language.clone()))
        .map_err(|_| StoreError::Corrupt(format!("unknown language `{}`", m.language)))?;
    Ok((
        count(m.seq, "function number")?,
        FunctionRow {
            path: m.path,
            language,
            function: crate::code::FunctionMetrics {
                name: m.name,
                start_line: count(m.start_line, "start line")?,
                end_line: count(m.end_line, "end line")?,
                parameters: count(m.parameters, "parameter count")?,
                cyclomatic: count(m.cyclomatic, "cyclomatic complexity")?,
                cognitive: count(m.cognitive, "cognitive complexity")?,
                max_nesting: count(m.max_nesting, "nesting")?,
            },
        },
    ))
}

#[async_trait]
impl AnalysisStore for SqlStore {
    async fn save_functions(
        &self,
        task: TaskId,
        list: Uuid,
        rows: &[FunctionRow],
    ) -> Result<(), StoreError> {
        use sea_orm::TransactionTrait;
        let txn = self.connection().begin().await?;
        // The task's row, share-locked (on Postgres; SQLite runs one transaction at a time):
        // the transition that ends the task waits for the save, or the save for it, while
        // the task's other writes (its events) go on.
        let current = task::Entity::find_by_id(task.as_uuid())
            .lock_shared()
            .one(&txn)
            .await?
            .ok_or(StoreError::NotFound(task))?;
        let status: orion_bus::TaskStatus = super::sql::parse(&current.status, "status")?;
        if status.is_terminal() {
            return Err(StoreError::TaskEnded(task, status));
        }
        task_function::Entity::delete_many()
            .filter(task_function::Column::TaskId.eq(task.as_uuid()))
            .filter(task_function::Column::ListId.eq(list))
            .exec(&txn)
            .await?;
        for (chunk_index, chunk) in rows.chunks(INSERT_CHUNK).enumerate() {
            let models = chunk.iter().enumerate().map(|(i, row)| {
                let f = &row.function;
                task_function::ActiveModel {
                    task_id: Set(task.as_uuid()),
                    list_id: Set(list),
                    seq: Set(column((chunk_index * INSERT_CHUNK + i) as u32)),
                    path: Set(text(&row.path)),
                    language: Set(row.language.name().to_owned()),
                    name: Set(text(&f.name)),
                    start_line: Set(column(f.start_line)),
                    end_line: Set(column(f.end_line)),
                    parameters: Set(column(f.parameters)),
                    cyclomatic: Set(column(f.cyclomatic)),
                    cognitive: Set(column(f.cognitive)),
                    max_nesting: Set(column(f.max_nesting)),
                }
            });
            task_function::Entity::insert_many(models)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    async fn functions(
        &self,
        task: TaskId,
        list: Uuid,
        after: Option<u32>,
        limit: u64,
    ) -> Result<Vec<(u32, FunctionRow)>, StoreError> {
        let mut query = task_function::Entity::find()
            .filter(task_function::Column::TaskId.eq(task.as_uuid()))
            .filter(task_function::Column::ListId.eq(list));
        if let Some(after) = after {
            query = query.filter(task_function::Column::Seq.gt(column(after)));
        }
        query
            .order_by_asc(task_function::Column::Seq)
            .limit(limit)
            .all(self.connection())
            .await?
            .into_iter()
            .map(to_row)
            .collect()
    }
}
