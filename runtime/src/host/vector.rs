//! `sovra:agent/vector`: the tenant's vector memory. Texts are embedded by
//! the host with a model on the tenant's allowlist; the vectors stay in the
//! tenant's own database.

use crate::bindings::sovra::agent::vector::{Hit, Host};
use crate::bindings::{GuestError, Pair};
use crate::sandbox::Sandbox;

type Reply<T> = wasmtime::Result<Result<T, GuestError>>;

fn pairs(metadata: Vec<Pair>) -> Vec<(String, String)> {
    metadata.into_iter().map(|p| (p.key, p.value)).collect()
}

impl Sandbox {
    /// Embeds one text with `model`, if the tenant allowed it.
    async fn embed_one(
        &mut self,
        model: &str,
        text: String,
    ) -> wasmtime::Result<Result<Vec<f32>, GuestError>> {
        let service = match self.allowed_model(model) {
            Ok(service) => service,
            Err(error) => return Ok(Err(error)),
        };
        let context = self.request_context();
        let result = self
            .blocking(move || service.embed(&context, vec![text]))
            .await?;
        Ok(result
            .map(|mut vectors| vectors.pop().unwrap_or_default())
            .map_err(|e| self.inference_error(e)))
    }

    async fn query(&mut self, collection: String, vector: Vec<f32>, k: u32) -> Reply<Vec<Hit>> {
        let Some(db) = self.vector.clone() else {
            return Ok(Err(self.not_granted("vector")));
        };
        let result = self
            .blocking(move || db.vector_query(&collection, &vector, k))
            .await?;
        Ok(result
            .map(|hits| {
                hits.into_iter()
                    .map(|h| Hit {
                        id: h.id,
                        score: h.score,
                        text: h.text,
                        metadata: h
                            .metadata
                            .into_iter()
                            .map(|(key, value)| Pair { key, value })
                            .collect(),
                    })
                    .collect()
            })
            .map_err(|e| self.storage_error(e)))
    }

    async fn upsert(
        &mut self,
        collection: String,
        id: String,
        vector: Vec<f32>,
        text: String,
        metadata: Vec<Pair>,
    ) -> Reply<()> {
        let Some(db) = self.vector.clone() else {
            return Ok(Err(self.not_granted("vector")));
        };
        let metadata = pairs(metadata);
        let result = self
            .blocking(move || db.vector_upsert(&collection, &id, &vector, &text, &metadata))
            .await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }
}

impl Host for Sandbox {
    async fn upsert_text(
        &mut self,
        collection: String,
        id: String,
        text: String,
        metadata: Vec<Pair>,
        model: String,
    ) -> Reply<()> {
        self.charge_host_call()?;
        if self.vector.is_none() {
            return Ok(Err(self.not_granted("vector")));
        }
        let vector = match self.embed_one(&model, text.clone()).await? {
            Ok(vector) => vector,
            Err(error) => return Ok(Err(error)),
        };
        self.upsert(collection, id, vector, text, metadata).await
    }

    async fn upsert_vector(
        &mut self,
        collection: String,
        id: String,
        vector: Vec<f32>,
        text: String,
        metadata: Vec<Pair>,
    ) -> Reply<()> {
        self.charge_host_call()?;
        self.upsert(collection, id, vector, text, metadata).await
    }

    async fn query_text(
        &mut self,
        collection: String,
        text: String,
        model: String,
        k: u32,
    ) -> Reply<Vec<Hit>> {
        self.charge_host_call()?;
        if self.vector.is_none() {
            return Ok(Err(self.not_granted("vector")));
        }
        let vector = match self.embed_one(&model, text).await? {
            Ok(vector) => vector,
            Err(error) => return Ok(Err(error)),
        };
        self.query(collection, vector, k).await
    }

    async fn query_vector(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        k: u32,
    ) -> Reply<Vec<Hit>> {
        self.charge_host_call()?;
        self.query(collection, vector, k).await
    }

    async fn delete(&mut self, collection: String, id: String) -> Reply<bool> {
        self.charge_host_call()?;
        let Some(db) = self.vector.clone() else {
            return Ok(Err(self.not_granted("vector")));
        };
        let result = self
            .blocking(move || db.vector_delete(&collection, &id))
            .await?;
        Ok(result.map_err(|e| self.storage_error(e)))
    }
}
