//! `sovra:agent/sql`: SQL on the tenant's own database.

use crate::bindings::sovra::agent::sql::{Host, RowSet, Value};
use crate::host::HostError;
use crate::sandbox::Sandbox;
use crate::storage::SqlValue;

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
    async fn execute(&mut self, statement: String, params: Vec<Value>) -> Result<u64, HostError> {
        self.charge_host_call()?;
        let db = self.sql()?;
        let params: Vec<SqlValue> = params.into_iter().map(to_storage).collect();
        Ok(self
            .blocking(move || db.sql_execute(&statement, &params))
            .await??)
    }

    async fn query(&mut self, statement: String, params: Vec<Value>) -> Result<RowSet, HostError> {
        self.charge_host_call()?;
        let db = self.sql()?;
        let params: Vec<SqlValue> = params.into_iter().map(to_storage).collect();
        let set = self
            .blocking(move || db.sql_query(&statement, &params))
            .await??;
        Ok(RowSet {
            columns: set.columns,
            rows: set
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(to_guest).collect())
                .collect(),
        })
    }
}
