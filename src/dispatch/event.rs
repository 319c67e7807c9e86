//! The CloudEvents the service publishes: the request of one resource to its application
//! (contract §7) and its cancel, both built when they are written to the outbox, and the
//! completion of an export, whose `data` is written with the final status and wrapped in its
//! envelope when it is published. Their schemas are in `docs/EVENTS.md`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::config::EventConfig;
use crate::domain::outbox::{CancelledSource, EventKind, OutboxEvent};
use crate::domain::{Format, NewExport, NewSource, OrgId};

#[derive(Serialize)]
struct EventData<'a> {
    resource_request: ResourceRequest<'a>,
}

#[derive(Serialize)]
struct ResourceRequest<'a> {
    application: &'a str,
    export_request_uuid: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    filters: Option<&'a RawValue>,
    format: Format,
    resource: &'a str,
    uuid: Uuid,
    #[serde(rename = "x-rh-identity")]
    identity: &'a str,
}

/// One outbox event per source of `export`, in source order. `identity` is the creating
/// request's raw `x-rh-identity` header.
pub fn events_for(export: &NewExport, identity: &str, config: &EventConfig) -> Vec<OutboxEvent> {
    export
        .sources
        .iter()
        .map(|source| {
            let id = Uuid::new_v4();
            OutboxEvent {
                id,
                kind: EventKind::Request,
                export_id: export.id,
                source_id: Some(source.id),
                application: Some(source.application.clone()),
                identity: Some(identity.to_owned()),
                payload: cloud_event(id, export, source, identity, config),
            }
        })
        .collect()
}

fn cloud_event(
    id: Uuid,
    export: &NewExport,
    source: &NewSource,
    identity: &str,
    config: &EventConfig,
) -> String {
    let event = Envelope {
        id,
        schema: &config.schema,
        source: &config.source,
        subject: request_subject(export.id),
        specversion: &config.specversion,
        event_type: &config.event_type,
        time: whole_seconds(&export.created_at),
        redhatorgid: export.owner.org_id.as_str(),
        dataschema: Some(&config.dataschema),
        data: EventData {
            resource_request: ResourceRequest {
                application: source.application.as_str(),
                export_request_uuid: export.id.as_uuid(),
                filters: source
                    .filters
                    .as_deref()
                    .filter(|filters| !is_empty(filters)),
                format: export.format,
                resource: source.resource.as_str(),
                uuid: source.id.as_uuid(),
                identity,
            },
        },
    };
    serde_json::to_string(&event).expect("a CloudEvent always serialises")
}

#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    id: Uuid,
    #[serde(rename = "$schema")]
    schema: &'a str,
    source: &'a str,
    subject: String,
    specversion: &'a str,
    #[serde(rename = "type")]
    event_type: &'a str,
    time: String,
    redhatorgid: &'a str,
    /// Only the request names a data schema (the upstream's).
    #[serde(skip_serializing_if = "Option::is_none")]
    dataschema: Option<&'a str>,
    data: T,
}

#[derive(Serialize)]
struct CancelData<'a> {
    resource_request: CancelledRequest<'a>,
}

#[derive(Serialize)]
struct CancelledRequest<'a> {
    application: &'a str,
    export_request_uuid: Uuid,
    resource: &'a str,
    uuid: Uuid,
    reason: &'a str,
    #[serde(rename = "x-rh-identity")]
    identity: &'a str,
}

/// The cancel event of `source`, whose export `org_id` deleted; `identity` is the deleting
/// request's raw `x-rh-identity` header.
pub fn cancel_event(
    source: &CancelledSource,
    org_id: &OrgId,
    identity: &str,
    config: &EventConfig,
) -> OutboxEvent {
    let id = Uuid::new_v4();
    let event = Envelope {
        id,
        schema: &config.schema,
        source: &config.source,
        subject: request_subject(source.export_id),
        specversion: &config.specversion,
        event_type: &config.cancel_type,
        time: whole_seconds(&Utc::now()),
        redhatorgid: org_id.as_str(),
        dataschema: None,
        data: CancelData {
            resource_request: CancelledRequest {
                application: source.application.as_str(),
                export_request_uuid: source.export_id.as_uuid(),
                resource: source.resource.as_str(),
                uuid: source.source_id.as_uuid(),
                reason: "the export was deleted",
                identity,
            },
        },
    };
    OutboxEvent {
        id,
        kind: EventKind::Cancel,
        export_id: source.export_id,
        source_id: Some(source.source_id),
        application: Some(source.application.clone()),
        identity: Some(identity.to_owned()),
        payload: serde_json::to_string(&event).expect("a CloudEvent always serialises"),
    }
}

/// The fields of a completion's stored `data` its envelope repeats.
#[derive(serde::Deserialize)]
struct CompletionHead {
    org_id: String,
    completed_at: String,
}

/// The published form of a completion event: its stored `data` (see
/// [`crate::domain::completion::Completion`]) in the CloudEvent envelope. `None` when the
/// stored data is not a completion (the row was written by something else).
pub fn completion_event(event: &OutboxEvent, config: &EventConfig) -> Option<String> {
    let data: &RawValue = serde_json::from_str(&event.payload).ok()?;
    let head: CompletionHead = serde_json::from_str(data.get()).ok()?;
    let time = DateTime::parse_from_rfc3339(&head.completed_at)
        .map(|time| whole_seconds(&time.with_timezone(&Utc)))
        .unwrap_or(head.completed_at);
    let envelope = Envelope {
        id: event.id,
        schema: &config.schema,
        source: &config.source,
        subject: format!(
            "urn:redhat:subject:export-service:export:{}",
            event.export_id
        ),
        specversion: &config.specversion,
        event_type: &config.completion_type,
        time,
        redhatorgid: &head.org_id,
        dataschema: None,
        data,
    };
    Some(serde_json::to_string(&envelope).expect("a CloudEvent always serialises"))
}

fn request_subject(export_id: crate::domain::ExportId) -> String {
    format!("urn:redhat:subject:export-service:request:{export_id}")
}

/// `null` and `{}` count as no filters (they are omitted from the event).
fn is_empty(filters: &RawValue) -> bool {
    matches!(filters.get().trim(), "null" | "{}")
}

fn whole_seconds(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{IdentityKind, Owner};
    use chrono::TimeZone;
    use serde_json::{Value, json};

    fn export(filters: &[Option<&str>]) -> NewExport {
        NewExport {
            id: Uuid::new_v4().into(),
            owner: Owner {
                org_id: "org-7".into(),
                account_id: String::new(),
                // A System owner: the key lists asserted below show the kind adds no field.
                kind: IdentityKind::System,
                username: "alice".into(),
            },
            name: "n".into(),
            format: Format::Csv,
            request_id: None,
            created_at: Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap()
                + chrono::Duration::microseconds(123),
            expires_at: Utc::now(),
            sources: filters
                .iter()
                .enumerate()
                .map(|(index, filters)| NewSource {
                    id: Uuid::new_v4().into(),
                    application: format!("app{index}").into(),
                    resource: "res".into(),
                    filters: filters.map(|text| RawValue::from_string(text.into()).unwrap()),
                })
                .collect(),
        }
    }

    #[test]
    fn one_event_per_source_with_every_field_in_order() {
        let export = export(&[Some(r#"{"b":1,"a":2}"#), None, Some("{}")]);
        let events = events_for(&export, "aWRlbnRpdHk=", &EventConfig::default());
        assert_eq!(events.len(), 3);
        let first: Value = serde_json::from_str(&events[0].payload).unwrap();
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "id",
                "$schema",
                "source",
                "subject",
                "specversion",
                "type",
                "time",
                "redhatorgid",
                "dataschema",
                "data"
            ]
        );
        assert_eq!(first["id"], json!(events[0].id));
        assert_eq!(
            first["subject"],
            format!("urn:redhat:subject:export-service:request:{}", export.id)
        );
        assert_eq!(first["time"], "2026-03-04T05:06:07Z");
        assert_eq!(first["redhatorgid"], "org-7");
        assert_eq!(
            first["$schema"],
            "https://console.redhat.com/api/schemas/events/v1/events.json"
        );
        let request = &first["data"]["resource_request"];
        let request_keys: Vec<&str> = request
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            request_keys,
            [
                "application",
                "export_request_uuid",
                "filters",
                "format",
                "resource",
                "uuid",
                "x-rh-identity"
            ]
        );
        assert_eq!(request["uuid"], json!(export.sources[0].id));
        assert_eq!(request["format"], "csv");
        assert!(
            events[0].payload.contains(r#""filters":{"b":1,"a":2}"#),
            "filters verbatim"
        );

        for event in &events[1..] {
            let value: Value = serde_json::from_str(&event.payload).unwrap();
            assert!(
                value["data"]["resource_request"].get("filters").is_none(),
                "absent and {{}} filters are omitted"
            );
        }
        assert_ne!(events[0].id, events[1].id);
        assert_eq!(events[2].application.as_ref().unwrap().as_str(), "app2");
        assert_eq!(events[2].identity.as_deref(), Some("aWRlbnRpdHk="));
        assert!(events.iter().all(|event| event.kind == EventKind::Request));
    }
}
