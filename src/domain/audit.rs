//! The audit trail: who did what to which export or plugin, and how it ended. Field names are
//! the upstream's security-event log fields (`security_event`, `action`, `resource_type`,
//! `resource_id`, `outcome`, `principal_*`, `reason`), plus the time and request id.

use std::fmt;

use chrono::{DateTime, Utc};

use super::Owner;

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// A tenant created an export.
    Create,
    /// A tenant read an export's status.
    ReadStatus,
    /// A tenant listed exports.
    List,
    /// A tenant downloaded an archive.
    Download,
    /// A tenant deleted an export.
    Delete,
    /// A request failed authentication.
    AuthFailure,
    /// An operator pushed a plugin version.
    PluginPush,
    /// An operator bound a plugin version.
    PluginBind,
    /// An operator unbound a plugin.
    PluginUnbind,
    /// An operator rolled a binding back.
    PluginRollback,
    /// An operator deleted a plugin version.
    PluginDelete,
    /// An operator started a canary.
    PluginCanary,
    /// An operator promoted a canary.
    PluginPromote,
    /// An operator aborted a canary.
    PluginAbort,
}

impl AuditAction {
    /// Every action, for parsing and documentation.
    pub const ALL: [Self; 14] = [
        Self::Create,
        Self::ReadStatus,
        Self::List,
        Self::Download,
        Self::Delete,
        Self::AuthFailure,
        Self::PluginPush,
        Self::PluginBind,
        Self::PluginUnbind,
        Self::PluginRollback,
        Self::PluginDelete,
        Self::PluginCanary,
        Self::PluginPromote,
        Self::PluginAbort,
    ];

    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::ReadStatus => "read_status",
            Self::List => "list",
            Self::Download => "download",
            Self::Delete => "delete",
            Self::AuthFailure => "auth_failure",
            Self::PluginPush => "plugin_push",
            Self::PluginBind => "plugin_bind",
            Self::PluginUnbind => "plugin_unbind",
            Self::PluginRollback => "plugin_rollback",
            Self::PluginDelete => "plugin_delete",
            Self::PluginCanary => "plugin_canary",
            Self::PluginPromote => "plugin_promote",
            Self::PluginAbort => "plugin_abort",
        }
    }

    /// What kind of thing the action is about.
    pub fn resource_type(self) -> &'static str {
        match self {
            Self::Create | Self::ReadStatus | Self::List | Self::Download | Self::Delete => {
                "export"
            }
            Self::AuthFailure => "request",
            Self::PluginPush | Self::PluginDelete => "plugin_version",
            Self::PluginBind
            | Self::PluginUnbind
            | Self::PluginRollback
            | Self::PluginCanary
            | Self::PluginPromote
            | Self::PluginAbort => "plugin_binding",
        }
    }

    /// Whether it matters for security review: access failures, data leaving the service,
    /// destruction, and every change to the code that runs on tenants' data.
    pub fn is_security_event(self) -> bool {
        !matches!(self, Self::Create | Self::ReadStatus | Self::List)
    }
}

impl std::str::FromStr for AuditAction {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown action '{text}'; one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Success,
    /// Refused (authentication, a quota, bad input, not found).
    Denied,
    /// Failed on the service's side.
    Failure,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }

    /// The outcome an HTTP status code means.
    pub fn of_status(status: u16) -> Self {
        match status {
            200..=399 => Self::Success,
            400..=499 => Self::Denied,
            _ => Self::Failure,
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user (or system, or service account) name; empty when unknown.
    pub user_id: String,
    /// The organisation; empty when unknown (an operator, or a request that failed
    /// authentication before one was known).
    pub org_id: String,
    /// `User`, `ServiceAccount`, `System`, `admin`, `application` or `anonymous`.
    pub kind: String,
}

impl Principal {
    /// The tenant who owns `owner`'s exports.
    pub fn tenant(owner: &Owner) -> Self {
        Self {
            user_id: owner.username.clone(),
            org_id: owner.org_id.as_str().to_owned(),
            kind: owner.kind.as_str().to_owned(),
        }
    }

    /// An operator with the admin token.
    pub fn admin() -> Self {
        Self {
            user_id: String::new(),
            org_id: String::new(),
            kind: "admin".into(),
        }
    }

    /// A caller that could not be identified.
    pub fn anonymous() -> Self {
        Self {
            user_id: String::new(),
            org_id: String::new(),
            kind: "anonymous".into(),
        }
    }
}

/// One audit record, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// What was done.
    pub action: AuditAction,
    /// Which export, plugin version or binding; empty for a list or an anonymous failure.
    pub resource_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Who did it.
    pub principal: Principal,
    /// Why it was refused or failed; empty on success.
    pub reason: String,
    /// The request's id (`x-rh-insights-request-id`).
    pub request_id: String,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its position in the trail (increasing).
    pub id: i64,
    /// When it was recorded.
    pub at: DateTime<Utc>,
    /// The record.
    pub record: AuditRecord,
}

/// Page size of the audit query when none is named, and its largest.
pub const DEFAULT_AUDIT_LIMIT: i64 = 100;
/// The largest page of the audit query.
pub const MAX_AUDIT_LIMIT: i64 = 1000;

/// A query of the trail: filters combined with AND, newest first, a page of `limit` rows
/// older than `before` (the cursor: the last id of the previous page).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// The principal's organisation.
    pub org_id: Option<String>,
    /// The action.
    pub action: Option<AuditAction>,
    /// The resource.
    pub resource_id: Option<String>,
    /// Recorded at or after.
    pub since: Option<DateTime<Utc>>,
    /// Recorded before.
    pub until: Option<DateTime<Utc>>,
    /// Only records with an id below this one.
    pub before: Option<i64>,
    /// The page size.
    pub limit: i64,
}

/// Parses the audit query string (`org_id`, `action`, `resource_id`, `since`, `until` as RFC
/// 3339, `cursor`, `limit`).
pub fn parse_audit_query(pairs: &[(String, String)]) -> Result<AuditQuery, String> {
    let mut query = AuditQuery {
        limit: DEFAULT_AUDIT_LIMIT,
        ..AuditQuery::default()
    };
    let time = |name: &str, value: &str| {
        DateTime::parse_from_rfc3339(value)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| {
                format!(
                    "'{name}' must be an RFC 3339 time such as 2026-01-31T12:00:00Z, got '{value}'"
                )
            })
    };
    for (name, value) in pairs {
        match name.as_str() {
            "org_id" => query.org_id = Some(value.clone()),
            "action" => query.action = Some(value.parse()?),
            "resource_id" => query.resource_id = Some(value.clone()),
            "since" => query.since = Some(time(name, value)?),
            "until" => query.until = Some(time(name, value)?),
            "cursor" => {
                query.before = Some(value.parse().map_err(|_| {
                    format!("'cursor' must be the cursor of a previous page, got '{value}'")
                })?);
            }
            "limit" => {
                let limit: i64 = value
                    .parse()
                    .ok()
                    .filter(|limit| *limit > 0)
                    .ok_or_else(|| format!("'limit' must be a positive number, got '{value}'"))?;
                query.limit = limit.min(MAX_AUDIT_LIMIT);
            }
            other => {
                return Err(format!(
                    "unknown parameter '{other}'; the audit query takes org_id, action, \
                     resource_id, since, until, cursor and limit"
                ));
            }
        }
    }
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since >= until
    {
        return Err("'since' must be before 'until'".into());
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn every_action_round_trips_and_unknown_ones_are_named() {
        for action in AuditAction::ALL {
            assert_eq!(action.as_str().parse::<AuditAction>(), Ok(action));
        }
        let error = "dance".parse::<AuditAction>().unwrap_err();
        assert!(
            error.contains("'dance'") && error.contains("plugin_bind"),
            "{error}"
        );
        assert!(AuditAction::Download.is_security_event());
        assert!(!AuditAction::List.is_security_event());
        assert_eq!(AuditAction::PluginBind.resource_type(), "plugin_binding");
    }

    #[test]
    fn parses_filters_and_bounds_the_page() {
        let query = parse_audit_query(&pairs(&[
            ("org_id", "42"),
            ("action", "download"),
            ("since", "2026-01-01T00:00:00Z"),
            ("until", "2026-02-01T00:00:00+01:00"),
            ("cursor", "77"),
            ("limit", "5000"),
        ]))
        .unwrap();
        assert_eq!(query.org_id.as_deref(), Some("42"));
        assert_eq!(query.action, Some(AuditAction::Download));
        assert_eq!(query.before, Some(77));
        assert_eq!(query.limit, MAX_AUDIT_LIMIT);
        assert_eq!(
            query.until.unwrap().to_rfc3339(),
            "2026-01-31T23:00:00+00:00"
        );
        assert_eq!(parse_audit_query(&[]).unwrap().limit, DEFAULT_AUDIT_LIMIT);
    }

    #[test]
    fn bad_parameters_say_what_to_change() {
        for (query, expected) in [
            (vec![("limit", "0")], "'limit'"),
            (vec![("since", "yesterday")], "RFC 3339"),
            (vec![("cursor", "abc")], "'cursor'"),
            (vec![("colour", "red")], "unknown parameter 'colour'"),
            (
                vec![
                    ("since", "2026-02-01T00:00:00Z"),
                    ("until", "2026-01-01T00:00:00Z"),
                ],
                "before 'until'",
            ),
        ] {
            let error = parse_audit_query(&pairs(&query)).unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }

    #[test]
    fn outcomes_follow_status_codes() {
        assert_eq!(Outcome::of_status(202), Outcome::Success);
        assert_eq!(Outcome::of_status(302), Outcome::Success);
        assert_eq!(Outcome::of_status(429), Outcome::Denied);
        assert_eq!(Outcome::of_status(503), Outcome::Failure);
    }
}
