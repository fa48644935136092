//! Operator endpoints: tenants, their API keys, publishers, the publisher log.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_runtime::TenantId;

use super::body::{JsonObject, NoFields};
use super::{ApiError, require_operator};
use crate::keys::new_key;
use crate::ledger;
use crate::quotas::Quotas;
use crate::signature::PublisherId;
use crate::state::AppState;

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(value: Value) -> Reply {
    Ok((StatusCode::OK, Json(value)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    id: String,
}

fn tenant_id(id: &str) -> Result<TenantId, ApiError> {
    TenantId::new(id).map_err(|e| ApiError::bad_request("bad-tenant-id", e.to_string()))
}

fn existing_tenant(state: &AppState, id: &str) -> Result<(), ApiError> {
    match state.db.tenant(id)? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            "no-such-tenant",
            format!("no tenant `{id}`"),
        )),
    }
}

pub async fn create_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<JsonObject<NewTenant>, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    let JsonObject(body) = body?;
    let id = tenant_id(&body.id)?;
    if !state.db.create_tenant(id.as_str())? {
        return Err(ApiError::conflict(
            "tenant-exists",
            format!("tenant `{id}` already exists"),
        ));
    }
    state.runtime.admit_tenant(&id);
    Ok((StatusCode::CREATED, Json(json!({"id": id.as_str()}))))
}

pub async fn list_tenants(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    require_operator(&state, &headers)?;
    ok(json!({"tenants": state.db.tenants()?}))
}

pub async fn show_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Reply {
    require_operator(&state, &headers)?;
    let row = state
        .db
        .tenant(&tenant)?
        .ok_or_else(|| ApiError::not_found("no-such-tenant", format!("no tenant `{tenant}`")))?;
    ok(
        json!({"tenant": row, "keys": state.db.keys(&tenant)?, "installs": state.db.installs(&tenant)?}),
    )
}

async fn set_disabled(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    disabled: bool,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_operator(state, headers)?;
    body?;
    if !state.db.set_tenant_disabled(tenant, disabled)? {
        return Err(ApiError::not_found(
            "no-such-tenant",
            format!("no tenant `{tenant}`"),
        ));
    }
    state.forget_keys();
    ok(json!({"id": tenant, "disabled": disabled}))
}

pub async fn disable_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    set_disabled(&state, &headers, &tenant, true, body).await
}

pub async fn enable_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    set_disabled(&state, &headers, &tenant, false, body).await
}

/// `DELETE /v1/tenants/{tenant}`: crypto-erases the tenant. It is disabled
/// first (no new invocation starts), its database key is destroyed and its
/// files removed (refused as busy, the tenant left disabled, while one of its
/// invocations still runs), then its keys, installs and cached state go, and
/// the publisher log and the tenant's audit chain record the erasure.
pub async fn erase_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    body?;
    let id = tenant_id(&tenant)?;
    existing_tenant(&state, &tenant)?;
    let started = (crate::db::now_ms(), std::time::Instant::now());
    state.db.set_tenant_disabled(&tenant, true)?;
    state.forget_keys();
    state
        .runtime
        .erase_tenant(&id)
        .map_err(|error| match error {
            sovra_runtime::storage::StorageError::Busy(message) => {
                ApiError::conflict("tenant-busy", message)
            }
            other => ApiError::internal(other),
        })?;
    state.db.erase_tenant(&tenant)?;
    state.forget_keys();
    state.forget_installs_of(&tenant);
    state
        .runtime
        .audit()
        .record(sovra_runtime::audit::AuditRecord::erasure(
            &tenant,
            started.0.max(0) as u64,
            started.1.elapsed().as_micros() as u64,
        ));
    ok(json!({"id": tenant, "erased": true}))
}

/// `PUT /v1/tenants/{tenant}/quotas`: sets the tenant's quotas (replacing
/// those before; `{}` lifts them), kept in the node database and applied at
/// once.
pub async fn set_quotas(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<JsonObject<Quotas>, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    let JsonObject(quotas) = body?;
    let id = tenant_id(&tenant)?;
    existing_tenant(&state, &tenant)?;
    quotas
        .validate(sovra_runtime::limits::DEFAULT_STORAGE_QUOTA)
        .map_err(|why| ApiError::unprocessable("bad-quotas", why))?;
    let spec = serde_json::to_string(&quotas).map_err(ApiError::internal)?;
    state.db.set_quotas(&tenant, &spec)?;
    state
        .runtime
        .set_storage_limits(&id, quotas.storage_limits())
        .map_err(ApiError::internal)?;
    state.quotas.set(&tenant, quotas.clone());
    ok(json!({"tenant": tenant, "quotas": quotas}))
}

pub async fn create_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    body?;
    existing_tenant(&state, &tenant)?;
    let key = new_key().map_err(ApiError::internal)?;
    state.db.add_key(&key.id, &tenant, &key.hash)?;
    state.key_added(key.hash.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": key.id,
            "tenant": tenant,
            "key": key.secret,
            "note": "this is the only time the key is shown; the node keeps only its hash",
        })),
    ))
}

pub async fn list_keys(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Reply {
    require_operator(&state, &headers)?;
    existing_tenant(&state, &tenant)?;
    ok(json!({"keys": state.db.keys(&tenant)?}))
}

pub async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    body?;
    if !state.db.revoke_key(&tenant, &key)? {
        return Err(ApiError::not_found(
            "no-such-key",
            format!("tenant `{tenant}` has no live key `{key}`"),
        ));
    }
    state.forget_keys();
    ok(json!({"id": key, "revoked": true}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPublisher {
    name: String,
    public_key: String,
}

pub async fn register_publisher(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<JsonObject<NewPublisher>, ApiError>,
) -> Reply {
    require_operator(&state, &headers)?;
    let JsonObject(body) = body?;
    TenantId::new(&body.name)
        .map_err(|e| ApiError::bad_request("bad-publisher-name", format!("publisher name: {e}")))?;
    let key = PublisherId::from_hex(&body.public_key)
        .map_err(|e| ApiError::bad_request("bad-public-key", e.to_string()))?;
    if !state.db.add_publisher(&body.name, &key.to_hex())? {
        return Err(ApiError::conflict(
            "publisher-exists",
            "a publisher with this name or key is already registered",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": body.name, "public_key": key.to_hex()})),
    ))
}

pub async fn list_publishers(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    require_operator(&state, &headers)?;
    ok(json!({"publishers": state.db.publishers()?}))
}

pub async fn publisher_log(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    require_operator(&state, &headers)?;
    let entries = state.db.log_entries()?;
    let verified = ledger::verify(&entries);
    ok(json!({
        "entries": entries,
        "intact": verified.is_ok(),
        "head": verified.as_ref().ok(),
        "broken": verified.err().map(|e| e.to_string()),
    }))
}
