//! Tenant endpoints: installs (with grants no higher than the node's
//! ceilings) and the loaded agent behind each, invocation history, usage, and
//! the models a tenant may use. Invocations are in [`super::invoke`].

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use sovra_runtime::Digest;
use sovra_runtime::policy::{self, Effective};

use super::body::{JsonObject, NoFields};
use super::{ApiError, OperatorToo, require_tenant};
use crate::db::{InstallGrants, InstallRow, PluginState, now_ms};
use crate::state::{AppState, ReadyInstall};

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

/// Most history records returned at once.
pub const MAX_HISTORY: usize = 500;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    version: String,
    #[serde(default, deserialize_with = "super::body::object")]
    grants: InstallGrants,
}

pub async fn install(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<JsonObject<InstallRequest>, ApiError>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let JsonObject(body) = body?;
    let row = state.db.plugin(&plugin, &body.version)?;
    let row = match row {
        Some(row) if row.state == PluginState::Approved => row,
        Some(row) if row.state == PluginState::Yanked => {
            return Err(ApiError::conflict(
                "yanked",
                format!(
                    "{plugin}@{} was yanked and cannot be installed",
                    body.version
                ),
            ));
        }
        _ => {
            return Err(ApiError::not_found(
                "no-such-plugin",
                format!("no approved plugin {plugin}@{}", body.version),
            ));
        }
    };
    let grants = &body.grants;
    policy::check_ceilings(grants, &state.config.ceilings)
        .map_err(|e| ApiError::forbidden("above-ceiling", e.to_string()))?;
    let allowed = state.models.models_for_tenant(&tenant);
    if let Some(model) = grants
        .models
        .iter()
        .find(|model| !allowed.iter().any(|m| &m.name == *model))
    {
        return Err(ApiError::forbidden(
            "model-not-allowed",
            format!("model `{model}` is not available to tenant `{tenant}` on this node"),
        ));
    }
    policy::check_requested(&format!("{plugin}@{}", body.version), &row.requests, grants)
        .map_err(|e| ApiError::unprocessable("not-requested", e.to_string()))?;
    let install = InstallRow {
        tenant: tenant.clone(),
        plugin: plugin.clone(),
        version: body.version.clone(),
        grants: body.grants.clone(),
        installed_ms: now_ms(),
    };
    state.db.install(&install)?;
    state.forget_install(&tenant, &plugin);
    Ok((StatusCode::OK, Json(json!({"install": install}))))
}

pub async fn list_installs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    Ok((
        StatusCode::OK,
        Json(json!({"installs": state.db.installs(&tenant)?})),
    ))
}

/// The error code of a plugin the tenant has not installed.
pub(super) const NOT_INSTALLED: &str = "not-installed";

fn no_install(tenant: &str, plugin: &str) -> ApiError {
    ApiError::not_found(
        NOT_INSTALLED,
        format!("tenant `{tenant}` has not installed `{plugin}`"),
    )
}

pub async fn show_install(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let row = state
        .db
        .installed(&tenant, &plugin)?
        .ok_or_else(|| no_install(&tenant, &plugin))?;
    Ok((StatusCode::OK, Json(json!({"install": row}))))
}

pub async fn uninstall(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, plugin)): Path<(String, String)>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    body?;
    if !state.db.uninstall(&tenant, &plugin)? {
        return Err(no_install(&tenant, &plugin));
    }
    state.forget_install(&tenant, &plugin);
    Ok((StatusCode::OK, Json(json!({"uninstalled": plugin}))))
}

/// The install, loaded and ready (from the cache, or from the database and
/// the artifact store). Code that is not compiled yet (a new engine version)
/// is compiled by the worker process first, never in the node. Grants are
/// cut to the node's current ceilings, which may have changed since install.
pub(super) async fn ready_install(
    state: &Arc<AppState>,
    tenant: &str,
    plugin: &str,
) -> Result<Arc<ReadyInstall>, ApiError> {
    if let Some(ready) = state.cached_install(tenant, plugin) {
        return Ok(ready);
    }
    let generation = state.install_generation();
    let row = state
        .db
        .installed(tenant, plugin)?
        .ok_or_else(|| no_install(tenant, plugin))?;
    let plugin_row = state.db.plugin(&row.plugin, &row.version)?.ok_or_else(|| {
        ApiError::internal(format!("install of missing {plugin}@{}", row.version))
    })?;
    let digest = Digest::from_hex(&plugin_row.digest)
        .ok_or_else(|| ApiError::internal(format!("bad stored digest {}", plugin_row.digest)))?;
    if !state.runtime.is_compiled(&digest) {
        let _slot = state
            .compile_slots
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        state
            .compiler
            .compile(
                &state.artifacts.path(&plugin_row.digest),
                &state.compiled_dir,
            )
            .await
            .map_err(ApiError::internal)?;
    }
    let loader = Arc::clone(state);
    let hex = plugin_row.digest.clone();
    let agent = tokio::task::spawn_blocking(move || {
        let bytes = loader.artifacts.get(&hex).map_err(ApiError::internal)?;
        loader
            .runtime
            .load(&bytes, None)
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    // The ceilings may have been lowered since the install: the effective
    // grant follows them.
    let Effective { grants, limits } =
        policy::effective(agent.manifest(), &row.grants, &state.config.ceilings);
    let ready = Arc::new(ReadyInstall {
        row,
        agent,
        grants,
        limits,
    });
    state.cache_install(Arc::clone(&ready), generation);
    Ok(ready)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    limit: Option<usize>,
}

pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(50).min(MAX_HISTORY);
    let reader = Arc::clone(&state);
    let owner = tenant.clone();
    let records = tokio::task::spawn_blocking(move || reader.runtime.audit().recent(&owner, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            json!({
                "invocation_id": r.invocation_id,
                "agent": r.agent,
                "agent_digest": r.agent_digest,
                "started_at_ms": r.started_at_ms,
                "duration_us": r.duration_us,
                "outcome": r.outcome,
                "error": r.error,
                "denials": r.denials,
                "parent": r.parent,
            })
        })
        .collect();
    Ok((StatusCode::OK, Json(json!({"invocations": records}))))
}

/// Longest period one usage query covers, in days.
pub const MAX_USAGE_DAYS: u64 = 366;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    days: Option<u64>,
}

/// A tenant's tokens per model and day (UTC) over the last `days` (30 by
/// default): for the tenant itself and for the operator.
pub async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Reply {
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let Query(query) = query?;
    let days = query.days.unwrap_or(30).clamp(1, MAX_USAGE_DAYS);
    let today_start = now_ms().max(0) as u64 / 86_400_000 * 86_400_000;
    let since = today_start.saturating_sub((days - 1) * 86_400_000);
    let reader = Arc::clone(&state);
    let owner = tenant.clone();
    let daily = tokio::task::spawn_blocking(move || reader.runtime.audit().usage(&owner, since))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let (prompt, generated) = daily.iter().fold((0, 0), |(p, g), d| {
        (p + d.prompt_tokens, g + d.generated_tokens)
    });
    let quotas = state.quotas.get(&tenant).unwrap_or_default();
    let invocations_today =
        state
            .quotas
            .used_today(&tenant, state.runtime.audit(), now_ms().max(0) as u64);
    let id = sovra_runtime::TenantId::new(&tenant)
        .map_err(|e| ApiError::bad_request("bad-tenant-id", e.to_string()))?;
    // Seeds the tenant's token ledger when it has token quotas.
    drop(state.token_budget(&tenant));
    let (tokens_today, tokens_month) = state.quotas.tokens_used(&tenant);
    let storage_bytes = state
        .runtime
        .tenant_storage(&id)
        .and_then(|db| db.used_bytes())
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::OK,
        Json(json!({
            "tenant": tenant,
            "since": sovra_runtime::audit::utc_day(since),
            "usage": daily,
            "total": {"prompt_tokens": prompt, "generated_tokens": generated},
            "quotas": quotas,
            "used": {
                "invocations_today": invocations_today,
                "storage_bytes": storage_bytes,
                "tokens_today": tokens_today,
                "tokens_this_month": tokens_month,
            },
        })),
    ))
}

/// `GET /v1/tenants/{tenant}/export`: the tenant's signed `.tar.zst` export
/// (see `crate::export`), for the tenant's key or the operator.
pub async fn export(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    require_tenant(&state, &headers, &tenant, OperatorToo::Yes)?;
    let id = sovra_runtime::TenantId::new(&tenant)
        .map_err(|e| ApiError::bad_request("bad-tenant-id", e.to_string()))?;
    let exporter = Arc::clone(&state);
    let archive = tokio::task::spawn_blocking(move || exporter.export_tenant(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let disposition = format!("attachment; filename=\"{tenant}.tar.zst\"");
    Ok((
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/zstd".to_owned(),
            ),
            (axum::http::header::CONTENT_DISPOSITION, disposition),
        ],
        archive,
    )
        .into_response())
}
