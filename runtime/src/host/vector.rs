//! `sovra:agent/vector`: the tenant's vector memory. Texts are embedded by
//! the host with a model on the tenant's allowlist; the vectors stay in the
//! tenant's own database.

use crate::bindings::Pair;
use crate::bindings::sovra::agent::vector::{Hit, Host};
use crate::host::HostError;
use crate::sandbox::Sandbox;

impl Sandbox {
    /// Embeds one text with `model`, if the tenant allowed it.
    async fn embed_one(&mut self, model: &str, text: String) -> Result<Vec<f32>, HostError> {
        let service = self.allowed_model(model)?;
        let context = self.request_context();
        let mut embedded = self
            .blocking(move || service.embed(&context, vec![text]))
            .await??;
        self.count_embedding(model.to_owned(), embedded.tokens);
        Ok(embedded.vectors.pop().unwrap_or_default())
    }

    /// The `k` entries of `collection` nearest to `vector`.
    async fn nearest_entries(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        k: u32,
    ) -> Result<Vec<Hit>, HostError> {
        let db = self.vector()?;
        let hits = self
            .blocking(move || db.vector_query(&collection, &vector, k))
            .await??;
        Ok(hits
            .into_iter()
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
            .collect())
    }

    /// Stores (or replaces) entry `id` of `collection`.
    async fn store_entry(
        &mut self,
        collection: String,
        id: String,
        vector: Vec<f32>,
        text: String,
        metadata: Vec<Pair>,
    ) -> Result<(), HostError> {
        let db = self.vector()?;
        let metadata: Vec<(String, String)> =
            metadata.into_iter().map(|p| (p.key, p.value)).collect();
        Ok(self
            .blocking(move || db.vector_upsert(&collection, &id, &vector, &text, &metadata))
            .await??)
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
    ) -> Result<(), HostError> {
        self.charge_host_call()?;
        // Refused before any embedding work when not granted.
        self.vector()?;
        let vector = self.embed_one(&model, text.clone()).await?;
        self.store_entry(collection, id, vector, text, metadata)
            .await
    }

    async fn upsert_vector(
        &mut self,
        collection: String,
        id: String,
        vector: Vec<f32>,
        text: String,
        metadata: Vec<Pair>,
    ) -> Result<(), HostError> {
        self.charge_host_call()?;
        self.store_entry(collection, id, vector, text, metadata)
            .await
    }

    async fn query_text(
        &mut self,
        collection: String,
        text: String,
        model: String,
        k: u32,
    ) -> Result<Vec<Hit>, HostError> {
        self.charge_host_call()?;
        self.vector()?;
        let vector = self.embed_one(&model, text).await?;
        self.nearest_entries(collection, vector, k).await
    }

    async fn query_vector(
        &mut self,
        collection: String,
        vector: Vec<f32>,
        k: u32,
    ) -> Result<Vec<Hit>, HostError> {
        self.charge_host_call()?;
        self.nearest_entries(collection, vector, k).await
    }

    async fn delete(&mut self, collection: String, id: String) -> Result<bool, HostError> {
        self.charge_host_call()?;
        let db = self.vector()?;
        Ok(self
            .blocking(move || db.vector_delete(&collection, &id))
            .await??)
    }
}
