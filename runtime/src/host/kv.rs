//! `sovra:agent/kv`: the tenant's key/value store.

use crate::bindings::sovra::agent::kv::{Host, KeyPage};
use crate::host::HostError;
use crate::sandbox::Sandbox;

impl Host for Sandbox {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, HostError> {
        self.charge_host_call()?;
        let db = self.kv()?;
        Ok(self.blocking(move || db.kv_get(&key)).await??)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), HostError> {
        self.charge_host_call()?;
        let db = self.kv()?;
        Ok(self.blocking(move || db.kv_set(&key, &value)).await??)
    }

    async fn delete(&mut self, key: String) -> Result<bool, HostError> {
        self.charge_host_call()?;
        let db = self.kv()?;
        Ok(self.blocking(move || db.kv_delete(&key)).await??)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, HostError> {
        self.charge_host_call()?;
        let db = self.kv()?;
        Ok(self
            .blocking(move || db.kv_increment(&key, delta))
            .await??)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<KeyPage, HostError> {
        self.charge_host_call()?;
        let db = self.kv()?;
        let page = self
            .blocking(move || db.kv_list(&prefix, cursor.as_deref(), limit))
            .await??;
        Ok(KeyPage {
            keys: page.keys,
            cursor: page.cursor,
        })
    }
}
