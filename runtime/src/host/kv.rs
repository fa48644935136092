//! `sovra:agent/kv`: the tenant's key/value store.

use crate::bindings::GuestError;
use crate::bindings::sovra::agent::kv::{Host, KeyPage};
use crate::sandbox::Sandbox;

type Reply<T> = wasmtime::Result<Result<T, GuestError>>;

impl Host for Sandbox {
    async fn get(&mut self, key: String) -> Reply<Option<Vec<u8>>> {
        self.charge_host_call()?;
        let Some(db) = self.kv.clone() else {
            return Ok(Err(self.not_granted("kv")));
        };
        let result = self.blocking(move || db.kv_get(&key)).await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Reply<()> {
        self.charge_host_call()?;
        let Some(db) = self.kv.clone() else {
            return Ok(Err(self.not_granted("kv")));
        };
        let result = self.blocking(move || db.kv_set(&key, &value)).await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }

    async fn delete(&mut self, key: String) -> Reply<bool> {
        self.charge_host_call()?;
        let Some(db) = self.kv.clone() else {
            return Ok(Err(self.not_granted("kv")));
        };
        let result = self.blocking(move || db.kv_delete(&key)).await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }

    async fn increment(&mut self, key: String, delta: i64) -> Reply<i64> {
        self.charge_host_call()?;
        let Some(db) = self.kv.clone() else {
            return Ok(Err(self.not_granted("kv")));
        };
        let result = self.blocking(move || db.kv_increment(&key, delta)).await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Reply<KeyPage> {
        self.charge_host_call()?;
        let Some(db) = self.kv.clone() else {
            return Ok(Err(self.not_granted("kv")));
        };
        let result = self
            .blocking(move || db.kv_list(&prefix, cursor.as_deref(), limit))
            .await?;
        Ok(result
            .map(|page| KeyPage {
                keys: page.keys,
                cursor: page.cursor,
            })
            .map_err(|e| self.storage_error(e)))
    }
}
