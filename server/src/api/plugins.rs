//! Plugin endpoints: publishers submit, the operator reviews, tenants browse
//! what was approved.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::body::NoFields;
use super::{ApiError, caller, require_operator, require_serving};
use crate::db::PluginState;
use crate::state::{AppState, Caller};

/// The header carrying the publisher's signature (the JSON that
/// `sovra plugin sign` writes).
pub const SIGNATURE_HEADER: &str = "sovra-signature";

type Reply = Result<(StatusCode, Json<Value>), ApiError>;

pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    require_serving(&state)?;
    let body = body?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request("bad-signature", "the signature header is not text")
            })
        })
        .transpose()?;
    let row = crate::submission::submit(&state, &body, signature).await?;
    tracing::info!(plugin = %row.name, version = %row.version, publisher = %row.publisher, "plugin submitted");
    Ok((StatusCode::CREATED, Json(json!({"plugin": row}))))
}

/// The operator sees every version; tenants see approved ones.
pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    let filter = match caller(&state, &headers)? {
        Caller::Operator => None,
        Caller::Tenant(_) => Some(PluginState::Approved),
        Caller::DisabledTenant(_) => {
            return Err(ApiError::forbidden(
                "tenant-disabled",
                "this tenant is disabled",
            ));
        }
        Caller::Anonymous => return Err(ApiError::unauthorized()),
    };
    Ok((
        StatusCode::OK,
        Json(json!({"plugins": state.db.plugins(filter)?})),
    ))
}

pub async fn show(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Reply {
    let operator = match caller(&state, &headers)? {
        Caller::Operator => true,
        Caller::Tenant(_) => false,
        Caller::DisabledTenant(_) => {
            return Err(ApiError::forbidden(
                "tenant-disabled",
                "this tenant is disabled",
            ));
        }
        Caller::Anonymous => return Err(ApiError::unauthorized()),
    };
    let missing = || ApiError::not_found("no-such-plugin", format!("no plugin {name}@{version}"));
    let row = state.db.plugin(&name, &version)?.ok_or_else(missing)?;
    if !operator && row.state != PluginState::Approved {
        return Err(missing());
    }
    Ok((StatusCode::OK, Json(json!({"plugin": row}))))
}

/// A review decision: which states it applies to, which it leads to.
struct Review {
    from: &'static [PluginState],
    to: PluginState,
    action: &'static str,
}

const APPROVE: Review = Review {
    from: &[PluginState::Pending],
    to: PluginState::Approved,
    action: "approved",
};

const YANK: Review = Review {
    from: &[PluginState::Pending, PluginState::Approved],
    to: PluginState::Yanked,
    action: "yanked",
};

async fn transition(
    state: &AppState,
    headers: &HeaderMap,
    (name, version): (&str, &str),
    review: Review,
    body: Result<NoFields, ApiError>,
) -> Reply {
    require_operator(state, headers)?;
    body?;
    let Review { from, to, action } = review;
    match state.db.set_plugin_state(name, version, from, to, action)? {
        None => Err(ApiError::not_found(
            "no-such-plugin",
            format!("no plugin {name}@{version}"),
        )),
        Some(current) if from.contains(&current) => {
            tracing::info!(plugin = %name, %version, action, "plugin reviewed");
            Ok((
                StatusCode::OK,
                Json(json!({"name": name, "version": version, "state": to})),
            ))
        }
        Some(current) => Err(ApiError::conflict(
            "wrong-state",
            format!(
                "{name}@{version} is {}; it cannot be {action}",
                current.as_str()
            ),
        )),
    }
}

pub async fn approve(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    transition(&state, &headers, (&name, &version), APPROVE, body).await
}

pub async fn yank(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
    body: Result<NoFields, ApiError>,
) -> Reply {
    transition(&state, &headers, (&name, &version), YANK, body).await
}
