//! The operators' admin API (`/admin/v1` on the internal listener): push, list, show and delete
//! plugin versions; bind applications to them, unbind, roll back, and read the history. Every
//! request carries `Authorization: Bearer <ADMIN_TOKEN>`; without a configured token the API is
//! closed.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::AppState;
use super::audit::AuditResource;
use super::error::{ApiError, ErrorBody};
use crate::config::push_slots;
use crate::db::canaries::{CanaryEnd, CanaryRecord};
use crate::db::plugins::{BindingAction, BindingRecord, PluginVersion};
use crate::domain::audit::parse_audit_query;
use crate::domain::canary::{CanaryAudience, CanaryPolicy};
use crate::domain::{ANY_ORG, Application, BindingKey, Format, OrgId, Resource, timestamp};
use crate::registry::binding::ANY_RESOURCE;
use crate::registry::canary::{CanaryPlan, DEFAULT_POLICY};
use crate::registry::cases::{Expectation, ExpectedViolation, TestCase};
use crate::registry::{Registry, RegistryError, SelfTest, SelfTestReport};

/// Where the admin API is mounted.
pub const ADMIN_BASE: &str = "/admin/v1";
/// The holder of the upload slots a push borrows (the `application` label of the gauge).
const PUSH_HOLDER: &str = "(admin push)";
/// The header naming the operator making a change (recorded in the history).
pub const OPERATOR_HEADER: &str = "x-admin-user";

/// The admin API's routes (under [`ADMIN_BASE`]).
pub fn routes(state: &AppState) -> Router<AppState> {
    // Base64 in JSON is 4/3 of the component, plus room for a sample.
    let push_limit = state.config.registry.max_component_bytes / 3 * 4 + 16 * 1024 * 1024;
    let gate = Gate {
        state: state.clone(),
        pushes: Arc::new(Semaphore::new(1)),
    };
    Router::new()
        .route(
            "/plugins",
            post(push_plugin)
                .get(list_plugins)
                .layer(DefaultBodyLimit::max(push_limit)),
        )
        .route("/plugins/{name}", get(show_plugin))
        .route(
            "/plugins/{name}/versions/{version}",
            get(show_version).delete(delete_version),
        )
        .route("/bindings", get(list_bindings))
        .route(
            "/bindings/{application}",
            axum::routing::put(bind).delete(unbind),
        )
        .route("/bindings/{application}/rollback", post(rollback))
        .route("/bindings/{application}/history", get(history))
        .route(
            "/bindings/{application}/canary",
            post(start_canary).get(list_canaries).delete(abort_canary),
        )
        .route(
            "/bindings/{application}/canary/promote",
            post(promote_canary),
        )
        .route("/audit", get(audit_trail))
        .route_layer(from_fn_with_state(gate, authenticate_first))
        .route_layer(from_fn_with_state(state.clone(), super::audit::audit_admin))
        .route("/openapi.json", get(openapi_json))
}

/// What the admin API checks before a handler runs.
#[derive(Clone)]
struct Gate {
    state: AppState,
    /// One push at a time reads its body (up to the push limit) on a replica.
    pushes: Arc<Semaphore>,
}

/// Checks the operator's token before anything reads the request's body, so an
/// unauthenticated request costs no more than its headers; then lets one push at a time read
/// its large body (others wait, holding only their connection).
async fn authenticate_first(State(gate): State<Gate>, request: Request, next: Next) -> Response {
    if let Err(refusal) = operator(&gate.state, request.headers()) {
        gate.state.metrics.refuse("admin_token");
        return ApiError::from(refusal).into_response();
    }
    if request.method() == Method::POST && request.uri().path().ends_with("/plugins") {
        let Ok(_permit) = gate.pushes.clone().acquire_owned().await else {
            return ApiError::from(AdminError::ShuttingDown).into_response();
        };
        // A push holds as much memory as several uploads: it borrows their slots, so the
        // replica's worst case (docs/OPERATIONS.md, "Sizing") holds during a push too.
        let count = push_slots(&gate.state.config);
        let _slots = match gate.state.upload_slots.try_take_many(PUSH_HOLDER, count) {
            Ok(slots) => slots,
            Err(_) => {
                gate.state.metrics.refuse("upload_slots");
                return ApiError::from(AdminError::SlotsTaken { count }).into_response();
            }
        };
        return next.run(request).await;
    }
    next.run(request).await
}

/// The operator behind a request: checks the bearer token; returns who is asking.
fn operator(state: &AppState, headers: &HeaderMap) -> Result<(Registry, String), AdminError> {
    check_token(state, headers)?;
    let who = headers
        .get(OPERATOR_HEADER)
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|who| !who.is_empty())
        .map(|who| who.chars().take(100).collect())
        .unwrap_or_else(|| "operator".to_owned());
    let registry = state.registry.clone().ok_or(AdminError::NoRegistry)?;
    Ok((registry, who))
}

/// Checks the operator's bearer token against `ADMIN_TOKEN`.
fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(expected) = &state.config.registry.admin_token else {
        return Err(AdminError::Disabled);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(AdminError::NoToken);
    };
    if !bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        return Err(AdminError::BadToken);
    }
    Ok(())
}

/// Why an admin request was refused: the operator's credentials, the push itself, or the
/// registry's answer. Mapped to HTTP here, in one place.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No `ADMIN_TOKEN` is configured.
    #[error("the admin API is disabled: set ADMIN_TOKEN to enable it")]
    Disabled,
    /// No bearer token was presented.
    #[error("missing 'Authorization: Bearer <token>' header")]
    NoToken,
    /// The bearer token is wrong.
    #[error("the admin token is not valid")]
    BadToken,
    /// The replica runs without a registry.
    #[error("no registry")]
    NoRegistry,
    /// The replica is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// A push could not borrow the upload slots it needs.
    #[error(
        "a push needs {count} of this replica's upload slots (MAX_CONCURRENT_UPLOADS) and \
         uploads hold them now; retry shortly"
    )]
    SlotsTaken {
        /// Slots a push borrows.
        count: usize,
    },
    /// The push request is malformed.
    #[error("{0}")]
    BadPush(String),
    /// A binding's scope is given twice, differently.
    #[error("{what} is '{query}' in the query but '{body}' in the body; give it once")]
    ScopeTwice {
        /// `resource` or `org_id`.
        what: &'static str,
        /// The query's value.
        query: String,
        /// The body's value.
        body: String,
    },
    /// The component is larger than `PLUGIN_MAX_COMPONENT_SIZE`.
    #[error("the component is larger than {limit_mib} MiB (PLUGIN_MAX_COMPONENT_SIZE)")]
    ComponentTooLarge {
        /// The limit, in MiB.
        limit_mib: usize,
    },
    /// No plugin has this name.
    #[error("no plugin named '{0}'")]
    NoPlugin(String),
    /// The plugin has no such version.
    #[error("plugin {name} has no version {version}")]
    NoVersion {
        /// The plugin.
        name: String,
        /// The version.
        version: String,
    },
    /// The registry refused or failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> Self {
        let message = error.to_string();
        match error {
            AdminError::Disabled => ApiError::new(StatusCode::FORBIDDEN, message),
            AdminError::NoToken | AdminError::BadToken => {
                ApiError::new(StatusCode::UNAUTHORIZED, message)
            }
            AdminError::NoRegistry | AdminError::ShuttingDown => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
            }
            AdminError::SlotsTaken { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(5)
            }
            AdminError::BadPush(_) | AdminError::ScopeTwice { .. } => {
                ApiError::bad_request(message)
            }
            AdminError::ComponentTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, message)
            }
            AdminError::NoPlugin(_) | AdminError::NoVersion { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, message)
            }
            AdminError::Registry(error) => registry_error(error),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        AdminError::Registry(error).into()
    }
}

/// The answer to a registry failure.
fn registry_error(error: RegistryError) -> ApiError {
    let message = error.to_string();
    match error {
        RegistryError::Refused(_) | RegistryError::BadConfig(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        RegistryError::SelfTest { violations, .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).with_violations(violations)
        }
        RegistryError::UnknownVersion { .. }
        | RegistryError::UnknownTarget(_)
        | RegistryError::BadCanary(_)
        | RegistryError::TestCases { .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        RegistryError::NotBound { .. } | RegistryError::NoCanary { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, message)
        }
        RegistryError::CanaryRunning { .. }
        | RegistryError::CasesDiffer { .. }
        | RegistryError::VersionExists { .. }
        | RegistryError::NoPrevious { .. }
        | RegistryError::InUse { .. } => ApiError::new(StatusCode::CONFLICT, message),
        RegistryError::Db(error) => error.into(),
        RegistryError::Store(_) => {
            tracing::warn!(%message, "registry storage failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the object store is unavailable; retry shortly",
            )
            .retry_after(2)
        }
    }
}

/// A push in JSON: the component in base64, and optionally a sample to test it on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The component (`.wasm`), base64.
    pub component: String,
    /// A sample the component must process without violations before it is accepted.
    pub self_test: Option<SelfTestRequest>,
    /// Test cases the version carries: run now, before every bind or canary, and by every
    /// replica before it applies the version; a version failing them is refused.
    #[serde(default)]
    pub test_cases: Vec<TestCase>,
}

/// A self-test sample.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelfTestRequest {
    /// The sample's content (text).
    pub input: String,
    /// Its format.
    pub from: Format,
    /// The format to produce.
    pub to: Format,
    /// The configuration to run with.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// A pushed version.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushResponse {
    /// The version stored.
    pub plugin: PluginVersion,
    /// `false` when exactly these bytes were already stored under this name and version.
    pub created: bool,
    /// The self-test's figures, if one ran.
    pub self_test: Option<SelfTestReport>,
}

/// A list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Listed<T> {
    /// The items.
    pub data: Vec<T>,
}

/// Push a plugin version: the raw component (`Content-Type: application/wasm`), or JSON with
/// the component in base64 and an optional self-test sample. The component is compiled and
/// checked (world, imports, `describe`) before it is accepted; its name and version come from
/// `describe`.
#[utoipa::path(
    post, path = "/plugins", tag = "plugins",
    request_body(content = PushRequest, description = "JSON, or the raw component as application/wasm"),
    responses(
        (status = 201, description = "Stored", body = PushResponse),
        (status = 200, description = "The same bytes were already stored", body = PushResponse),
        (status = 401, description = "Bad or missing token", body = ErrorBody),
        (status = 409, description = "The version exists with other bytes", body = ErrorBody),
        (status = 422, description = "Not a usable component, or the self-test or a test case failed", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn push_plugin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let (component, self_test, cases) = if is_json {
        let request: PushRequest = serde_json::from_slice(&body)
            .map_err(|error| AdminError::BadPush(format!("invalid push request: {error}")))?;
        let component = base64::engine::general_purpose::STANDARD
            .decode(request.component.trim())
            .map_err(|error| AdminError::BadPush(format!("'component' is not base64: {error}")))?;
        let self_test = request.self_test.map(|test| SelfTest {
            input: test.input.into_bytes(),
            from: test.from,
            to: test.to,
            config: test.config.map(|config| config.to_string()),
        });
        (component, self_test, request.test_cases)
    } else {
        (body.to_vec(), None, Vec::new())
    };
    if component.is_empty() {
        return Err(AdminError::BadPush("the component is empty".into()).into());
    }
    if component.len() > state.config.registry.max_component_bytes {
        return Err(AdminError::ComponentTooLarge {
            limit_mib: state.config.registry.max_component_bytes / (1024 * 1024),
        }
        .into());
    }
    let pushed = registry.push(component, self_test, cases, &who).await?;
    tracing::info!(
        plugin = %pushed.version.name, version = %pushed.version.version,
        digest = %pushed.version.digest, created = pushed.created, by = %who,
        "plugin version pushed"
    );
    let status = if pushed.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let made = AuditResource(format!(
        "{}@{}",
        pushed.version.name, pushed.version.version
    ));
    Ok((
        status,
        axum::Extension(made),
        Json(PushResponse {
            plugin: pushed.version,
            created: pushed.created,
            self_test: pushed.self_test,
        }),
    )
        .into_response())
}

/// One page of the audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// The records, newest first.
    pub data: Vec<AuditView>,
    /// The next (older) page, absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One audit record, with the upstream's security-event field names.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    /// Its position in the trail (the cursor of the page that ends with it).
    pub id: i64,
    /// When it was recorded.
    pub time: String,
    /// The request's id.
    pub request_id: String,
    /// Whether it matters for security review (access failures, downloads, deletions, plugin
    /// changes).
    pub security_event: bool,
    /// What was done.
    pub action: String,
    /// `export`, `plugin_version`, `plugin_binding` or `request`.
    pub resource_type: String,
    /// Which one.
    pub resource_id: String,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    /// Who (user, system or service-account name; the `x-admin-user` of an operator).
    pub principal_user_id: String,
    /// Their organisation.
    pub principal_org_id: String,
    /// `User`, `ServiceAccount`, `System`, `admin`, `application` (a source application that
    /// failed authentication, named by the URL it claimed) or `anonymous`.
    pub principal_type: String,
    /// Why it was refused or failed.
    pub reason: String,
}

/// The audit trail, newest first: filters `org_id`, `action`, `resource_id`, `since`, `until`
/// (RFC 3339), pages of `limit` (default 100, at most 1000) followed with `cursor`.
#[utoipa::path(
    get, path = "/audit", tag = "audit",
    params(
        ("org_id" = Option<String>, Query, description = "The principal's organisation"),
        ("action" = Option<String>, Query, description = "create, read_status, list, download, delete, auth_failure, plugin_push, plugin_bind, plugin_unbind, plugin_rollback, plugin_delete, plugin_canary, plugin_promote, plugin_abort"),
        ("resource_id" = Option<String>, Query, description = "An export id, `name@version` or an application"),
        ("since" = Option<String>, Query, description = "Recorded at or after (RFC 3339)"),
        ("until" = Option<String>, Query, description = "Recorded before (RFC 3339)"),
        ("cursor" = Option<String>, Query, description = "The `next` cursor of the previous page"),
        ("limit" = Option<i64>, Query, description = "Page size (default 100, at most 1000)"),
    ),
    responses(
        (status = 200, description = "A page", body = AuditPage),
        (status = 400, description = "A bad filter", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn audit_trail(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    check_token(&state, &headers)?;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let query = parse_audit_query(&pairs).map_err(ApiError::bad_request)?;
    let entries = state.audit.query(&query).await?;
    let next = (entries.len() as i64 == query.limit)
        .then(|| entries.last().map(|entry| entry.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        data: entries
            .into_iter()
            .map(|entry| AuditView {
                id: entry.id,
                time: timestamp::format(&entry.at),
                request_id: entry.record.request_id,
                security_event: entry.record.action.is_security_event(),
                action: entry.record.action.as_str().to_owned(),
                resource_type: entry.record.action.resource_type().to_owned(),
                resource_id: entry.record.resource_id,
                outcome: entry.record.outcome.as_str().to_owned(),
                principal_user_id: entry.record.principal.user_id,
                principal_org_id: entry.record.principal.org_id,
                principal_type: entry.record.principal.kind,
                reason: entry.record.reason,
            })
            .collect(),
        next,
    }))
}

/// Every plugin version, by name, newest first.
#[utoipa::path(
    get, path = "/plugins", tag = "plugins",
    responses((status = 200, body = Listed<PluginVersion>), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_plugins(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Listed<PluginVersion>>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    Ok(Json(Listed {
        data: registry.repository().versions(None).await?,
    }))
}

/// The versions of one plugin, newest first.
#[utoipa::path(
    get, path = "/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, body = Listed<PluginVersion>),
        (status = 404, description = "No such plugin", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn show_plugin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Listed<PluginVersion>>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    let versions = registry.repository().versions(Some(&name)).await?;
    if versions.is_empty() {
        return Err(AdminError::NoPlugin(name).into());
    }
    Ok(Json(Listed { data: versions }))
}

/// One version.
#[utoipa::path(
    get, path = "/plugins/{name}/versions/{version}", tag = "plugins",
    params(("name" = String, Path), ("version" = String, Path)),
    responses((status = 200, body = PluginVersion), (status = 404, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn show_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<PluginVersion>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    registry
        .repository()
        .version(&name, &version)
        .await?
        .map(Json)
        .ok_or_else(|| AdminError::NoVersion { name, version }.into())
}

/// Delete a version no binding uses (refused with 409 while one does).
#[utoipa::path(
    delete, path = "/plugins/{name}/versions/{version}", tag = "plugins",
    params(("name" = String, Path), ("version" = String, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = ErrorBody),
        (status = 409, description = "The version is bound", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn delete_version(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    match registry.delete(&name, &version).await {
        Ok(()) => {
            tracing::info!(plugin = %name, %version, by = %who, "plugin version deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(RegistryError::UnknownVersion { .. }) => {
            Err(AdminError::NoVersion { name, version }.into())
        }
        Err(error) => Err(error.into()),
    }
}

/// The bindings in force.
#[utoipa::path(
    get, path = "/bindings", tag = "bindings",
    responses((status = 200, body = Listed<BindingRecord>), (status = 401, body = ErrorBody)),
    security(("admin_token" = []))
)]
pub async fn list_bindings(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Listed<BindingRecord>>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    Ok(Json(Listed {
        data: registry.repository().active_bindings().await?,
    }))
}

/// A binding to make.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindRequest {
    /// The plugin's name.
    pub plugin: String,
    /// The version to activate.
    pub version: String,
    /// One resource of the application, or `*` (the default) for all of them. May be given in
    /// the query instead.
    pub resource: Option<String>,
    /// One organisation (tenant) whose uploads the binding applies to; absent for every
    /// organisation. An organisation's binding wins over the application's. May be given in the
    /// query instead.
    pub org_id: Option<String>,
    /// The plugin's configuration (a JSON object; `schema` is a JSON Schema the host checks).
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// Which binding of an application.
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BindingSelector {
    /// One resource, or `*` (the default).
    pub resource: Option<String>,
    /// One organisation's binding; absent for the binding of every organisation.
    pub org_id: Option<String>,
}

impl BindingSelector {
    /// The binding of `application` this selects.
    fn key(self, application: Application) -> BindingKey {
        BindingKey::new(
            application,
            Resource::from(self.resource.unwrap_or_else(|| ANY_RESOURCE.to_owned())),
            self.org_id.filter(|org| org != ANY_ORG).map(OrgId::from),
        )
    }
}

/// The value given in the query or the body (refused when both give different ones).
fn once(
    what: &'static str,
    query: Option<String>,
    body: Option<String>,
) -> Result<Option<String>, AdminError> {
    match (query, body) {
        (Some(query), Some(body)) if query != body => {
            Err(AdminError::ScopeTwice { what, query, body })
        }
        (query, body) => Ok(query.or(body)),
    }
}

/// Bind an application (or one of its resources, for every organisation or one) to a plugin
/// version; every replica applies it within about a second. Uploads already running finish on
/// the version they started with. The most specific binding of an upload applies: the
/// organisation's for the resource, the organisation's for the application, the resource's,
/// then the application's.
#[utoipa::path(
    put, path = "/bindings/{application}", tag = "bindings",
    params(("application" = String, Path), BindingSelector),
    request_body = BindRequest,
    responses(
        (status = 200, description = "In force", body = BindingRecord),
        (status = 400, description = "The resource or organisation is given twice, differently", body = ErrorBody),
        (status = 422, description = "Unknown version, application or resource, a malformed org_id, or a bad configuration", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn bind(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<BindingSelector>,
    Json(request): Json<BindRequest>,
) -> Result<Json<BindingRecord>, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let key = BindingSelector {
        resource: once("resource", selector.resource, request.resource)?,
        org_id: once("org_id", selector.org_id, request.org_id)?,
    }
    .key(application);
    let record = registry
        .bind(
            &key,
            &request.plugin,
            &request.version,
            request.config,
            &who,
        )
        .await?;
    tracing::info!(binding = %key, plugin = %request.plugin, version = %request.version, by = %who, "plugin bound");
    Ok(Json(record))
}

/// Remove a binding (uploads it applied to then use the next less specific binding, or run
/// without a plugin).
#[utoipa::path(
    delete, path = "/bindings/{application}", tag = "bindings",
    params(("application" = String, Path), BindingSelector),
    responses(
        (status = 200, body = BindingRecord),
        (status = 401, body = ErrorBody),
        (status = 404, description = "Nothing is bound there (the message names where the application is bound)", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn unbind(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<BindingSelector>,
) -> Result<Json<BindingRecord>, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let key = selector.key(application);
    let record = registry.unbind(&key, &who).await?;
    tracing::info!(binding = %key, by = %who, "plugin unbound");
    Ok(Json(record))
}

/// Bind the previous version (and configuration) again.
#[utoipa::path(
    post, path = "/bindings/{application}/rollback", tag = "bindings",
    params(("application" = String, Path), BindingSelector),
    responses(
        (status = 200, description = "Rolled back", body = BindingRecord),
        (status = 409, description = "Nothing to roll back to (the message names where the application is bound)", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn rollback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<BindingSelector>,
) -> Result<Json<BindingRecord>, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let key = selector.key(application);
    let record = registry.rollback(&key, &who).await?;
    tracing::info!(binding = %key, plugin = ?record.plugin, version = ?record.version, by = %who, "plugin binding rolled back");
    Ok(Json(record))
}

/// Which changes of an application's bindings to show.
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistorySelector {
    /// Only this resource's bindings (`*` for those of every resource).
    pub resource: Option<String>,
    /// Only this organisation's bindings (`*` for those of every organisation); absent for all.
    pub org_id: Option<String>,
}

/// Every binding change of an application, newest first: what was done (bind, unbind,
/// rollback), at which scope, by whom, with which version and configuration.
#[utoipa::path(
    get, path = "/bindings/{application}/history", tag = "bindings",
    params(("application" = String, Path), HistorySelector),
    responses((status = 200, body = Listed<BindingRecord>)),
    security(("admin_token" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<String>,
    Query(selector): Query<HistorySelector>,
) -> Result<Json<Listed<BindingRecord>>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    Ok(Json(Listed {
        data: registry
            .repository()
            .history(
                &Application::from(application),
                selector.resource.map(Resource::from).as_ref(),
                selector.org_id.as_deref(),
            )
            .await?,
    }))
}

/// A canary to start.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// The plugin's name.
    pub plugin: String,
    /// The version to try.
    pub version: String,
    /// One resource of the application, or `*` (the default). May be given in the query.
    pub resource: Option<String>,
    /// Percentage (0–100) of organisations the canary takes, by a stable hash of `org_id`.
    #[serde(default)]
    pub share_percent: u8,
    /// Organisations the canary takes whatever their hash.
    #[serde(default)]
    pub org_ids: Vec<String>,
    /// The canary's configuration (a JSON object).
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// How much the canary's failure rate (traps, deadlines, memory, output limits; not data
    /// violations) may exceed the stable version's before the service rolls it back
    /// (default 0.05).
    pub max_failure_rate: Option<f64>,
    /// Uploads the canary must process before it is judged (default 20).
    pub min_uploads: Option<u64>,
}

/// Which canary of an application.
#[derive(Debug, Default, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CanarySelector {
    /// One resource, or `*` (the default).
    pub resource: Option<String>,
}

impl CanarySelector {
    fn key(self, application: Application) -> BindingKey {
        BindingSelector {
            resource: self.resource,
            org_id: None,
        }
        .key(application)
    }
}

/// Start a canary: a version bound, beside the application's (or resource's) binding, for a
/// share of organisations or a list of them, until it is promoted or aborted — or rolled back
/// by the service when it fails more often than the stable version.
#[utoipa::path(
    post, path = "/bindings/{application}/canary", tag = "bindings",
    params(("application" = String, Path), CanarySelector),
    request_body = CanaryRequest,
    responses(
        (status = 201, description = "Running", body = CanaryRecord),
        (status = 409, description = "A canary already runs there", body = ErrorBody),
        (status = 422, description = "Unknown version, application or resource, a bad configuration, audience or policy", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn start_canary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<CanarySelector>,
    Json(request): Json<CanaryRequest>,
) -> Result<(StatusCode, Json<CanaryRecord>), ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let key = CanarySelector {
        resource: once("resource", selector.resource, request.resource)?,
    }
    .key(application);
    let plan = CanaryPlan {
        plugin: request.plugin,
        version: request.version,
        config: request.config,
        audience: CanaryAudience {
            share_percent: request.share_percent,
            org_ids: request.org_ids.into_iter().map(OrgId::from).collect(),
        },
        policy: CanaryPolicy {
            max_failure_rate: request
                .max_failure_rate
                .unwrap_or(DEFAULT_POLICY.max_failure_rate),
            min_uploads: request.min_uploads.unwrap_or(DEFAULT_POLICY.min_uploads),
        },
    };
    let record = registry.start_canary(&key, plan, &who).await?;
    tracing::info!(binding = %key, plugin = %record.plugin, version = %record.version, share_percent = record.share_percent, by = %who, "plugin canary started");
    Ok((StatusCode::CREATED, Json(record)))
}

/// An application's canaries (of one resource when given), newest first, with their counts.
#[utoipa::path(
    get, path = "/bindings/{application}/canary", tag = "bindings",
    params(("application" = String, Path), CanarySelector),
    responses((status = 200, body = Listed<CanaryRecord>)),
    security(("admin_token" = []))
)]
pub async fn list_canaries(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<CanarySelector>,
) -> Result<Json<Listed<CanaryRecord>>, ApiError> {
    let (registry, _) = operator(&state, &headers)?;
    let resource = selector.resource.map(Resource::from);
    Ok(Json(Listed {
        data: registry
            .repository()
            .canaries()
            .of(&application, resource.as_ref())
            .await?,
    }))
}

/// Promote the running canary: its version and configuration become the binding for everyone.
#[utoipa::path(
    post, path = "/bindings/{application}/canary/promote", tag = "bindings",
    params(("application" = String, Path), CanarySelector),
    responses(
        (status = 200, description = "Promoted", body = CanaryRecord),
        (status = 404, description = "No canary runs there", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn promote_canary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<CanarySelector>,
) -> Result<Json<CanaryRecord>, ApiError> {
    end_canary(
        state,
        headers,
        selector.key(application),
        CanaryEnd::Promote,
    )
    .await
}

/// Abort the running canary: its tenants go back to the binding.
#[utoipa::path(
    delete, path = "/bindings/{application}/canary", tag = "bindings",
    params(("application" = String, Path), CanarySelector),
    responses(
        (status = 200, description = "Aborted", body = CanaryRecord),
        (status = 404, description = "No canary runs there", body = ErrorBody),
    ),
    security(("admin_token" = []))
)]
pub async fn abort_canary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(application): Path<Application>,
    Query(selector): Query<CanarySelector>,
) -> Result<Json<CanaryRecord>, ApiError> {
    end_canary(state, headers, selector.key(application), CanaryEnd::Abort).await
}

async fn end_canary(
    state: AppState,
    headers: HeaderMap,
    key: BindingKey,
    end: CanaryEnd,
) -> Result<Json<CanaryRecord>, ApiError> {
    let (registry, who) = operator(&state, &headers)?;
    let record = registry.end_canary(&key, end, &who).await?;
    tracing::info!(binding = %key, plugin = %record.plugin, version = %record.version, state = %record.state, by = %who, "plugin canary ended");
    Ok(Json(record))
}

/// The admin API, as documented at `/admin/v1/openapi.json` (internal listener).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Export Service — admin API",
        description = "Plugin registry: versions, bindings, rollback. Bearer token: ADMIN_TOKEN.",
        version = "1.0.0"
    ),
    servers((url = "/admin/v1")),
    paths(
        push_plugin, list_plugins, show_plugin, show_version, delete_version,
        list_bindings, bind, unbind, rollback, history, start_canary, list_canaries,
        promote_canary, abort_canary, audit_trail,
    ),
    components(schemas(
        ErrorBody, PushRequest, SelfTestRequest, PushResponse, PluginVersion, BindingRecord,
        BindingAction, BindRequest, CanaryRequest, CanaryRecord, TestCase, Expectation,
        ExpectedViolation, SelfTestReport, Format, AuditPage, AuditView
    )),
    modifiers(&AdminTokenScheme),
    tags(
        (name = "plugins", description = "Immutable plugin versions"),
        (name = "bindings", description = "Which version runs on whose uploads"),
        (name = "audit", description = "Who did what, and how it ended")
    )
)]
pub struct AdminApiDoc;

struct AdminTokenScheme;

impl utoipa::Modify for AdminTokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The operators' token (ADMIN_TOKEN)"))
                    .build(),
            ),
        );
    }
}

/// `GET /admin/v1/openapi.json`.
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(AdminApiDoc::openapi())
}
