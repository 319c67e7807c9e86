//! Turning a tenant's create request into a [`NewExport`], with the upstream's validation order
//! and messages (contract §5.1) and a few limits the upstream lacks.

use chrono::{DateTime, Duration, SecondsFormat, SubsecRound, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::EnabledApps;
use super::{ExportId, Format, NewExport, NewSource, Owner, SourceId};

/// The most sources one export may request.
pub const MAX_SOURCES: usize = 100;
/// The longest export name, in characters.
pub const MAX_NAME_CHARS: usize = 1024;

/// Why a create request was refused. The `Display` text is the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The request is malformed (answered 400).
    #[error("{0}")]
    Invalid(String),
    /// A requested (application, resource) is not enabled for export (answered 406).
    #[error("Payload does not match Configured Exports")]
    NotEnabled,
}

/// What the service needs besides the body to accept a create request.
#[derive(Debug, Clone, Copy)]
pub struct CreateContext<'a> {
    /// The caller.
    pub owner: &'a Owner,
    /// The request id of this call.
    pub request_id: Option<&'a str>,
    /// Which resources may be exported.
    pub enabled_apps: &'a EnabledApps,
    /// Default lifetime of an export.
    pub expiry_days: u32,
    /// The latest `expires_at` a request may ask for, in days from now.
    pub max_expiry_days: u32,
    /// The current time.
    pub now: DateTime<Utc>,
}

struct RawSource {
    application: String,
    resource: String,
    filters: Option<Value>,
}

/// Validates a create request body. Checks run in the upstream's order: JSON shape, sources
/// present, sources enabled (406), filters are objects, format; then our own limits.
pub fn parse_create_request(
    body: &[u8],
    context: CreateContext<'_>,
) -> Result<NewExport, CreateError> {
    let fields = decode_object(body)?;
    let name = optional_string(&fields, "name")?.unwrap_or_default();
    let format = optional_string(&fields, "format")?;
    let expires_at = match optional_string(&fields, "expires_at")? {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    invalid(format!(
                        "'expires_at' must be an RFC 3339 timestamp (e.g. 2030-01-31T00:00:00Z), got '{text}'"
                    ))
                })?
                .with_timezone(&Utc)
                .trunc_subsecs(6),
        ),
    };
    let sources = match fields.get("sources") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| decode_source(index, item))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("'sources' must be an array".into())),
    };

    if sources.is_empty() {
        return Err(invalid("no sources provided".into()));
    }
    if name.contains('\0')
        || sources
            .iter()
            .any(|source| source.application.contains('\0') || source.resource.contains('\0'))
    {
        return Err(invalid(
            "'name', 'application' and 'resource' must not contain NUL characters".into(),
        ));
    }
    if sources.iter().any(|source| {
        !context
            .enabled_apps
            .allows(&source.application, &source.resource)
    }) {
        return Err(CreateError::NotEnabled);
    }
    if sources
        .iter()
        .any(|source| matches!(&source.filters, Some(filters) if !filters.is_object()))
    {
        return Err(invalid("invalid json format of filters".into()));
    }
    let format: Format = format
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| invalid("invalid or missing payload format".into()))?;
    if sources.len() > MAX_SOURCES {
        return Err(invalid(format!(
            "too many sources: {} requested, at most {MAX_SOURCES} are allowed",
            sources.len()
        )));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid(format!(
            "'name' is too long: at most {MAX_NAME_CHARS} characters are allowed"
        )));
    }
    if let Some((first, again)) = repeated_source(&sources) {
        let source = &sources[first];
        return Err(invalid(format!(
            "sources[{again}] repeats sources[{first}] ({}/{} with the same filters); request \
             each source once",
            source.application, source.resource
        )));
    }
    let latest = context.now + Duration::days(i64::from(context.max_expiry_days));
    if let Some(expires_at) = expires_at
        && expires_at > latest
    {
        return Err(invalid(format!(
            "'expires_at' may be at most {} days from now (until {}); got {}",
            context.max_expiry_days,
            latest.to_rfc3339_opts(SecondsFormat::Secs, true),
            expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        )));
    }

    Ok(NewExport {
        id: ExportId::random(),
        owner: context.owner.clone(),
        name,
        format,
        request_id: context.request_id.map(str::to_owned),
        created_at: context.now,
        expires_at: expires_at
            .unwrap_or(context.now + Duration::days(i64::from(context.expiry_days))),
        sources: sources
            .into_iter()
            .map(|source| NewSource {
                id: SourceId::random(),
                application: source.application.into(),
                resource: source.resource.into(),
                filters: source.filters.map(to_raw),
            })
            .collect(),
    })
}

fn invalid(message: String) -> CreateError {
    CreateError::Invalid(message)
}

/// Reads the first JSON value of the body (trailing data is ignored, as the upstream's decoder
/// does) and returns its fields with lower-cased names (the upstream matches names
/// case-insensitively).
fn decode_object(body: &[u8]) -> Result<Map<String, Value>, CreateError> {
    let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    let value = match values.next() {
        None => {
            return Err(invalid(
                "request body is empty: expected a JSON object".into(),
            ));
        }
        Some(Err(error)) => {
            return Err(invalid(format!("request body is not valid JSON: {error}")));
        }
        Some(Ok(value)) => value,
    };
    match value {
        Value::Object(fields) => Ok(lowercase_keys(fields)),
        _ => Err(invalid("request body must be a JSON object".into())),
    }
}

fn lowercase_keys(fields: Map<String, Value>) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(key, value)| (key.to_lowercase(), value))
        .collect()
}

fn optional_string(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, CreateError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(invalid(format!("'{name}' must be a string"))),
    }
}

fn decode_source(index: usize, item: &Value) -> Result<RawSource, CreateError> {
    let Value::Object(fields) = item else {
        return Err(invalid(format!("sources[{index}] must be an object")));
    };
    let fields = lowercase_keys(fields.clone());
    let text = |name: &str| -> Result<String, CreateError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(_) => Err(invalid(format!("sources[{index}].{name} must be a string"))),
        }
    };
    Ok(RawSource {
        application: text("application")?,
        resource: text("resource")?,
        filters: fields
            .get("filters")
            .filter(|value| !value.is_null())
            .cloned(),
    })
}

/// The first pair of sources that ask for the same application, resource and filters (filters
/// compared as JSON values, so key order does not matter), as indices.
fn repeated_source(sources: &[RawSource]) -> Option<(usize, usize)> {
    (1..sources.len()).find_map(|again| {
        let later = &sources[again];
        sources[..again]
            .iter()
            .position(|earlier| {
                earlier.application == later.application
                    && earlier.resource == later.resource
                    && earlier.filters == later.filters
            })
            .map(|first| (first, again))
    })
}

fn to_raw(value: Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).expect("a serialised JSON value is valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IdentityKind;
    use chrono::TimeZone;

    fn owner() -> Owner {
        Owner {
            org_id: "o".into(),
            account_id: String::new(),
            kind: IdentityKind::User,
            username: "u".into(),
        }
    }

    fn parse(body: &str) -> Result<NewExport, CreateError> {
        let apps = EnabledApps::parse(r#"{"app":["res","other"]}"#).unwrap();
        let owner = owner();
        parse_create_request(
            body.as_bytes(),
            CreateContext {
                owner: &owner,
                request_id: Some("rid"),
                enabled_apps: &apps,
                expiry_days: 7,
                max_expiry_days: 36_500,
                now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            },
        )
    }

    fn message(body: &str) -> String {
        parse(body).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_valid_request_with_defaults() {
        let export = parse(
            r#"{"name":"n","format":"csv","status":"complete","id":"x","sources":[{"application":"app","resource":"res","filters":{"b":1,"a":[2]}},{"application":"app","resource":"other"}]} trailing"#,
        )
        .unwrap();
        assert_eq!(export.name, "n");
        assert_eq!(export.format, Format::Csv);
        assert_eq!(export.request_id.as_deref(), Some("rid"));
        assert_eq!(
            export.expires_at,
            Utc.with_ymd_and_hms(2026, 1, 8, 0, 0, 0).unwrap()
        );
        assert_eq!(export.sources.len(), 2);
        assert_eq!(
            export.sources[0].filters.as_ref().unwrap().get(),
            r#"{"b":1,"a":[2]}"#
        );
        assert!(export.sources[1].filters.is_none());
        assert_ne!(export.sources[0].id, export.sources[1].id);
    }

    #[test]
    fn field_names_are_case_insensitive_and_expiry_is_kept() {
        let export = parse(
            r#"{"Name":"n","FORMAT":"json","Expires_At":"2030-05-01T10:00:00+02:00","Sources":[{"Application":"app","Resource":"res","Filters":null}]}"#,
        )
        .unwrap();
        assert_eq!(export.format, Format::Json);
        assert_eq!(
            export.expires_at,
            Utc.with_ymd_and_hms(2030, 5, 1, 8, 0, 0).unwrap()
        );
    }

    #[test]
    fn validation_order_and_messages() {
        assert!(message("").contains("empty"));
        assert!(message("{").starts_with("request body is not valid JSON"));
        assert_eq!(message("[]"), "request body must be a JSON object");
        assert_eq!(message(r#"{"name":5}"#), "'name' must be a string");
        assert!(message(r#"{"expires_at":"tomorrow"}"#).contains("RFC 3339"));
        assert_eq!(message(r#"{"sources":{}}"#), "'sources' must be an array");
        assert_eq!(message(r#"{"format":"csv"}"#), "no sources provided");
        assert_eq!(
            message(r#"{"format":"csv","sources":[]}"#),
            "no sources provided"
        );
        // Allow-list before filters before format.
        assert_eq!(
            parse(r#"{"format":"bad","sources":[{"application":"app","resource":"nope","filters":"x"}]}"#)
                .unwrap_err(),
            CreateError::NotEnabled
        );
        assert_eq!(
            message(
                r#"{"format":"bad","sources":[{"application":"app","resource":"res","filters":"{}"}]}"#
            ),
            "invalid json format of filters"
        );
        for filters in ["[]", "3", "true"] {
            assert_eq!(
                message(&format!(
                    r#"{{"format":"csv","sources":[{{"application":"app","resource":"res","filters":{filters}}}]}}"#
                )),
                "invalid json format of filters"
            );
        }
        assert_eq!(
            message(r#"{"format":"CSV","sources":[{"application":"app","resource":"res"}]}"#),
            "invalid or missing payload format"
        );
        assert_eq!(
            message(r#"{"sources":[{"application":"app","resource":"res"}]}"#),
            "invalid or missing payload format"
        );
        assert_eq!(
            message(r#"{"format":"csv","sources":[{"application":"app","resource":7}]}"#),
            "sources[0].resource must be a string"
        );
    }

    #[test]
    fn nul_characters_are_refused() {
        assert!(message(r#"{"name":"a\u0000","format":"csv","sources":[{"application":"app","resource":"res"}]}"#).contains("NUL"));
        assert!(
            message(r#"{"format":"csv","sources":[{"application":"app","resource":"res\u0000"}]}"#)
                .contains("NUL")
        );
    }

    #[test]
    fn limits() {
        let source = r#"{"application":"app","resource":"res"}"#;
        let many = vec![source; MAX_SOURCES + 1].join(",");
        assert!(
            message(&format!(r#"{{"format":"csv","sources":[{many}]}}"#))
                .starts_with("too many sources")
        );
        // Distinct sources: the same one twice is refused on its own.
        let exactly = (0..MAX_SOURCES)
            .map(|index| {
                format!(r#"{{"application":"app","resource":"res","filters":{{"part":{index}}}}}"#)
            })
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse(&format!(r#"{{"format":"csv","sources":[{exactly}]}}"#)).is_ok());
        let long_name = "é".repeat(MAX_NAME_CHARS + 1);
        assert!(
            message(&format!(
                r#"{{"name":"{long_name}","format":"csv","sources":[{source}]}}"#
            ))
            .contains("too long")
        );
    }

    #[test]
    fn a_source_requested_twice_is_refused_but_other_filters_are_another_source() {
        let message = message(
            r#"{"format":"csv","sources":[{"application":"app","resource":"res","filters":{"a":1,"b":2}},{"application":"app","resource":"other"},{"application":"app","resource":"res","filters":{"b":2,"a":1}}]}"#,
        );
        assert_eq!(
            message,
            "sources[2] repeats sources[0] (app/res with the same filters); request each source once"
        );
        let export = parse(
            r#"{"format":"csv","sources":[{"application":"app","resource":"res","filters":{"a":1}},{"application":"app","resource":"res","filters":{"a":2}},{"application":"app","resource":"res"}]}"#,
        )
        .unwrap();
        assert_eq!(export.sources.len(), 3);
    }

    #[test]
    fn expires_at_is_bounded_by_the_configured_maximum_but_may_lie_in_the_past() {
        let apps = EnabledApps::parse(r#"{"app":["res"]}"#).unwrap();
        let owner = owner();
        let with = |expires_at: &str| {
            parse_create_request(
                format!(r#"{{"format":"csv","expires_at":"{expires_at}","sources":[{{"application":"app","resource":"res"}}]}}"#).as_bytes(),
                CreateContext {
                    owner: &owner,
                    request_id: None,
                    enabled_apps: &apps,
                    expiry_days: 7,
                    max_expiry_days: 30,
                    now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                },
            )
        };
        assert!(with("2026-01-31T00:00:00Z").is_ok());
        assert!(
            with("2022-01-01T00:00:00Z").is_ok(),
            "as upstream: the past is kept"
        );
        assert_eq!(
            with("2026-01-31T00:00:01Z").unwrap_err().to_string(),
            "'expires_at' may be at most 30 days from now (until 2026-01-31T00:00:00Z); got 2026-01-31T00:00:01Z"
        );
    }
}
