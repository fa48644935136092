//! The submission pipeline: a publisher's signed component becomes a pending
//! plugin version, or is rejected with the first check it fails. Checks run
//! cheapest first and nothing is stored until all of them pass:
//!
//! 1. size within the node's plugin limit;
//! 2. a signature is attached and parses;
//! 3. the bytes are a component (not garbage, not a core module) exporting
//!    a sovra world, importing nothing outside the allowed set;
//! 4. it carries a valid manifest, and imports only what the manifest asks;
//! 5. the signature verifies against a registered publisher's key;
//! 6. the name is not another publisher's, the version is new;
//! 7. it compiles, in a worker process under time and memory limits.

use std::sync::Arc;

use sovra_runtime::{Inspection, LoadError, Runtime};

use crate::api::ApiError;
use crate::db::{AddPlugin, PluginRow, PluginState, now_ms};
use crate::signature::{PluginSignature, PublisherId, SignatureError};
use crate::state::AppState;

/// Runs every check on a submission and stores it as pending.
pub async fn submit(
    state: &Arc<AppState>,
    bytes: &[u8],
    signature: Option<&str>,
) -> Result<PluginRow, ApiError> {
    let max = state.config.limits.max_plugin;
    if bytes.len() > max {
        return Err(ApiError::too_large(format!(
            "the component is {} bytes; this node accepts plugins up to {max}",
            bytes.len()
        )));
    }
    let signature = signature.ok_or_else(|| {
        ApiError::bad_request(
            "missing-signature",
            "no `Sovra-Signature` header: sign the component with `sovra plugin sign`",
        )
    })?;
    let signature: PluginSignature = serde_json::from_str(signature).map_err(|e| {
        ApiError::bad_request(
            "bad-signature",
            format!("the `Sovra-Signature` header is not a sovra signature: {e}"),
        )
    })?;

    let Inspection { info, manifest, .. } =
        Runtime::inspect(bytes, None).map_err(load_rejection)?;
    let manifest_source = info.manifest_source.clone().unwrap_or_default();

    let publisher_key = PublisherId::from_hex(&signature.publisher).map_err(|e| {
        ApiError::bad_request(
            "bad-signature",
            format!("the signature's publisher key: {e}"),
        )
    })?;
    let publisher = state
        .db
        .publisher_by_key(&signature.publisher)?
        .ok_or_else(|| {
            ApiError::forbidden(
                "unknown-publisher",
                format!(
                    "publisher key {} is not registered on this node",
                    signature.publisher
                ),
            )
        })?;
    publisher_key
        .verify(&signature, bytes, &manifest_source)
        .map_err(|e: SignatureError| ApiError::forbidden("bad-signature", e.to_string()))?;

    let name = manifest.name.clone();
    let version = manifest.version.to_string();
    if let Some(owner) = state.db.plugin_owner(&name)?
        && owner != publisher
    {
        return Err(ApiError::forbidden(
            "name-taken",
            format!("plugin `{name}` belongs to publisher `{owner}`"),
        ));
    }
    if state.db.plugin(&name, &version)?.is_some() {
        return Err(ApiError::conflict(
            "duplicate-version",
            format!("{name}@{version} already exists; versions are immutable, bump the version"),
        ));
    }

    // Compile out of process from a private temporary copy, before anything
    // is stored under the node's artifacts; a few workers at a time.
    let _slot = state.compile_slots.try_acquire().map_err(|_| {
        ApiError::too_many(
            "compile-busy",
            "the node is compiling other submissions; retry shortly",
            std::time::Duration::from_secs(5),
        )
    })?;
    let staging = tempfile_in(&state.config.data_dir)?;
    std::fs::write(staging.path(), bytes).map_err(ApiError::internal)?;
    state
        .compiler
        .compile(staging.path(), &state.compiled_dir)
        .await
        .map_err(|e| match e {
            crate::compile::CompileError::Worker(_) => ApiError::internal(e),
            e => ApiError::unprocessable("compile-failed", e.to_string()),
        })?;

    let digest = state.artifacts.put(bytes).map_err(ApiError::internal)?;
    let row = PluginRow {
        name,
        version,
        publisher,
        digest: digest.clone(),
        size: bytes.len() as i64,
        world: info.world.as_str().to_owned(),
        description: manifest.description.clone(),
        requests: manifest.capabilities.clone(),
        state: PluginState::Pending,
        submitted_ms: now_ms(),
    };
    let signature_json = serde_json::to_string(&signature).expect("signatures serialize");
    let refused = match state.db.add_plugin(&row, &signature_json) {
        Ok(AddPlugin::Added) => return Ok(row),
        Ok(AddPlugin::Duplicate) => ApiError::conflict(
            "duplicate-version",
            format!("{}@{} already exists", row.name, row.version),
        ),
        Ok(AddPlugin::NameTaken(owner)) => ApiError::forbidden(
            "name-taken",
            format!("plugin `{}` belongs to publisher `{owner}`", row.name),
        ),
        Err(e) => e.into(),
    };
    // Nothing else refers to the artifact just stored: take it back.
    if !state.db.digest_in_use(&digest).unwrap_or(true) {
        state.artifacts.remove(&digest);
    }
    Err(refused)
}

/// A private temporary file under the data directory (same filesystem).
fn tempfile_in(data_dir: &std::path::Path) -> Result<tempfile::NamedTempFile, ApiError> {
    let dir = data_dir.join("staging");
    std::fs::create_dir_all(&dir).map_err(ApiError::internal)?;
    tempfile::NamedTempFile::new_in(dir).map_err(ApiError::internal)
}

/// The rejection for a component that failed a structural check.
fn load_rejection(error: LoadError) -> ApiError {
    let code = match &error {
        LoadError::NotWasm => "not-wasm",
        LoadError::CoreModule => "core-module",
        LoadError::Malformed(_) => "malformed",
        LoadError::WrongWorld(_) => "wrong-world",
        LoadError::UnsupportedImport(_) => "forbidden-import",
        LoadError::Manifest(_) => "bad-manifest",
        LoadError::MissingManifest => "missing-manifest",
        LoadError::ManifestMismatch(_) => "manifest-mismatch",
        LoadError::TooLarge { .. } => return ApiError::too_large(error.to_string()),
        LoadError::Io { .. } | LoadError::Compile(_) => "invalid-component",
    };
    ApiError::unprocessable(code, error.to_string())
}
