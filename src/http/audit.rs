//! The audit layers: every tenant action on exports, every admin change to plugins and every
//! authentication failure is recorded with its outcome. Creates and deletes that succeed are
//! recorded by their handler in the action's own transaction (the response is then marked
//! [`Audited`]); everything else is recorded here once the answer is known.

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use super::error::ErrorMessage;
use super::request_id::RequestId;
use crate::domain::audit::{AuditAction, AuditRecord, Outcome, Principal};
use crate::domain::identity::Identity;

/// Authentication failures written to the trail per second and replica; beyond, they are only
/// logged and counted, so a flood of unauthenticated requests cannot turn into a flood of
/// database writes.
pub const AUTH_FAILURE_WRITES_PER_SECOND: u32 = 20;

/// The per-second allowance of authentication-failure writes.
#[derive(Debug, Default)]
pub struct AuthFailureBudget {
    window: std::sync::Mutex<(u64, u32)>,
}

impl AuthFailureBudget {
    /// Takes one write from this second's allowance.
    fn take(&self) -> bool {
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if window.0 != second {
            *window = (second, 0);
        }
        window.1 += 1;
        window.1 <= AUTH_FAILURE_WRITES_PER_SECOND
    }
}

/// Records a failed authentication, within [`AUTH_FAILURE_WRITES_PER_SECOND`].
pub async fn record_auth_failure(state: &AppState, record: &AuditRecord) {
    if state.auth_failure_audits.take() {
        self::record(state, record).await;
    } else {
        state.metrics.refuse("audit_auth_failure_unwritten");
        tracing::info!(
            security_event = true,
            action = record.action.as_str(),
            outcome = record.outcome.as_str(),
            reason = %record.reason,
            "audit (not written: too many authentication failures this second)"
        );
    }
}

/// Marks a response whose action its handler recorded in its transaction.
#[derive(Debug, Clone, Copy)]
pub struct Audited;

/// Names the resource an admin action made (a pushed version), when the path does not.
#[derive(Debug, Clone)]
pub struct AuditResource(pub String);

/// The tenant action of a request to the public API (paths below `/api/export/v1`).
fn tenant_action(method: &Method, path: &str) -> Option<(AuditAction, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let action = match (method.as_str(), segments.as_slice()) {
        ("POST", ["exports"]) => AuditAction::Create,
        ("GET", ["exports"]) => AuditAction::List,
        ("GET", ["exports", _]) => AuditAction::Download,
        ("DELETE", ["exports", _]) => AuditAction::Delete,
        ("GET", ["exports", _, "status"]) => AuditAction::ReadStatus,
        _ => return None,
    };
    Some((
        action,
        segments.get(1).copied().unwrap_or_default().to_owned(),
    ))
}

/// The admin action of a request to the admin API (paths below `/admin/v1`).
fn admin_action(method: &Method, path: &str) -> Option<(AuditAction, String)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match (method.as_str(), segments.as_slice()) {
        ("POST", ["plugins"]) => (AuditAction::PluginPush, String::new()),
        ("DELETE", ["plugins", name, "versions", version]) => {
            (AuditAction::PluginDelete, format!("{name}@{version}"))
        }
        ("PUT", ["bindings", application]) => (AuditAction::PluginBind, (*application).into()),
        ("DELETE", ["bindings", application]) => (AuditAction::PluginUnbind, (*application).into()),
        ("POST", ["bindings", application, "rollback"]) => {
            (AuditAction::PluginRollback, (*application).into())
        }
        ("POST", ["bindings", application, "canary"]) => {
            (AuditAction::PluginCanary, (*application).into())
        }
        ("POST", ["bindings", application, "canary", "promote"]) => {
            (AuditAction::PluginPromote, (*application).into())
        }
        ("DELETE", ["bindings", application, "canary"]) => {
            (AuditAction::PluginAbort, (*application).into())
        }
        _ => return None,
    })
}

/// The request id `observe` assigned, or empty.
pub(super) fn request_id(request: &Request) -> String {
    request
        .extensions()
        .get::<RequestId>()
        .map(|id| id.0.clone())
        .unwrap_or_default()
}

/// Records tenant actions (behind the identity gate, which records its own refusals).
pub async fn audit_tenant(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some((action, resource_id)) = tenant_action(request.method(), request.uri().path()) else {
        return next.run(request).await;
    };
    let principal = request
        .extensions()
        .get::<Identity>()
        .map_or_else(Principal::anonymous, |identity| {
            Principal::tenant(&identity.owner)
        });
    let request_id = request_id(&request);
    let response = next.run(request).await;
    if response.extensions().get::<Audited>().is_none() {
        let audit = record_of(action, resource_id, principal, request_id, &response);
        record(&state, &audit).await;
    }
    response
}

/// Records admin changes and every refused admin token.
pub async fn audit_admin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let change = admin_action(request.method(), request.uri().path());
    let operator = request
        .headers()
        .get(super::admin::OPERATOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let request_id = request_id(&request);
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let (action, resource_id, principal) = match change {
        _ if status == 401 || status == 403 => {
            let audit = record_of(
                AuditAction::AuthFailure,
                path,
                Principal::anonymous(),
                request_id,
                &response,
            );
            record_auth_failure(&state, &audit).await;
            return response;
        }
        Some((action, resource_id)) => {
            let mut principal = Principal::admin();
            principal.user_id = operator.unwrap_or_default();
            let resource_id = response
                .extensions()
                .get::<AuditResource>()
                .map_or(resource_id, |made| made.0.clone());
            (action, resource_id, principal)
        }
        None => return response,
    };
    let audit = record_of(action, resource_id, principal, request_id, &response);
    record(&state, &audit).await;
    response
}

/// The record of an action answered with `response` (read before any await: a response is
/// not `Sync`, so a reference to it cannot be held across one).
fn record_of(
    action: AuditAction,
    resource_id: String,
    principal: Principal,
    request_id: String,
    response: &Response,
) -> AuditRecord {
    let outcome = Outcome::of_status(response.status().as_u16());
    let reason = match outcome {
        Outcome::Success => String::new(),
        _ => response.extensions().get::<ErrorMessage>().map_or_else(
            || response.status().to_string(),
            |message| message.0.clone(),
        ),
    };
    AuditRecord {
        action,
        resource_id,
        outcome,
        principal,
        reason,
        request_id,
    }
}

/// Appends `record` to the trail and logs it as a security event. A trail that cannot be
/// written does not fail the request (the action already happened); it is logged as an error
/// and counted.
pub async fn record(state: &AppState, record: &AuditRecord) {
    tracing::info!(
        security_event = record.action.is_security_event(),
        action = record.action.as_str(),
        resource_type = record.action.resource_type(),
        resource_id = %record.resource_id,
        outcome = record.outcome.as_str(),
        principal_user_id = %record.principal.user_id,
        principal_org_id = %record.principal.org_id,
        principal_type = %record.principal.kind,
        reason = %record.reason,
        "audit"
    );
    if let Err(error) = state.audit.append(record).await {
        state.metrics.refuse("audit_unwritten");
        tracing::error!(%error, action = record.action.as_str(), "cannot write the audit trail");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_paths_map_to_actions_with_the_export_id() {
        let id = "0b7d7a4c-0000-4000-8000-000000000001";
        assert_eq!(
            tenant_action(&Method::POST, "/exports"),
            Some((AuditAction::Create, String::new()))
        );
        assert_eq!(
            tenant_action(&Method::GET, &format!("/exports/{id}/status")),
            Some((AuditAction::ReadStatus, id.to_owned()))
        );
        assert_eq!(
            tenant_action(&Method::DELETE, &format!("/exports/{id}")),
            Some((AuditAction::Delete, id.to_owned()))
        );
        assert_eq!(tenant_action(&Method::GET, "/ping"), None);
    }

    #[test]
    fn admin_changes_map_to_actions_and_reads_do_not() {
        assert_eq!(
            admin_action(&Method::PUT, "/bindings/exampleApp"),
            Some((AuditAction::PluginBind, "exampleApp".into()))
        );
        assert_eq!(
            admin_action(&Method::DELETE, "/plugins/csv-json/versions/1.0.0"),
            Some((AuditAction::PluginDelete, "csv-json@1.0.0".into()))
        );
        assert_eq!(admin_action(&Method::GET, "/bindings"), None);
    }
}
