//! `sovra:agent/sql`: SQL on the tenant's own database.

use crate::bindings::GuestError;
use crate::bindings::sovra::agent::sql::{Host, RowSet, Value};
use crate::sandbox::Sandbox;
use crate::storage::SqlValue;

type Reply<T> = wasmtime::Result<Result<T, GuestError>>;

fn to_storage(value: Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Integer(v) => SqlValue::Integer(v),
        Value::Real(v) => SqlValue::Real(v),
        Value::Text(v) => SqlValue::Text(v),
        Value::Blob(v) => SqlValue::Blob(v),
    }
}

fn to_guest(value: SqlValue) -> Value {
    match value {
        SqlValue::Null => Value::Null,
        SqlValue::Integer(v) => Value::Integer(v),
        SqlValue::Real(v) => Value::Real(v),
        SqlValue::Text(v) => Value::Text(v),
        SqlValue::Blob(v) => Value::Blob(v),
    }
}

impl Host for Sandbox {
    async fn execute(&mut self, statement: String, params: Vec<Value>) -> Reply<u64> {
        self.charge_host_call()?;
        let Some(db) = self.sql.clone() else {
            return Ok(Err(self.not_granted("sql")));
        };
        let params: Vec<SqlValue> = params.into_iter().map(to_storage).collect();
        let result = self
            .blocking(move || db.sql_execute(&statement, &params))
            .await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }

    async fn query(&mut self, statement: String, params: Vec<Value>) -> Reply<RowSet> {
        self.charge_host_call()?;
        let Some(db) = self.sql.clone() else {
            return Ok(Err(self.not_granted("sql")));
        };
        let params: Vec<SqlValue> = params.into_iter().map(to_storage).collect();
        let result = self
            .blocking(move || db.sql_query(&statement, &params))
            .await?;
        Ok(result
            .map(|set| RowSet {
                columns: set.columns,
                rows: set
                    .rows
                    .into_iter()
                    .map(|row| row.into_iter().map(to_guest).collect())
                    .collect(),
            })
            .map_err(|e| self.storage_error(e)))
    }
}
