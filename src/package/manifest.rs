//! The archive's `meta.json` and `README.md`: the upstream's fields and outline, plus what the
//! upstream left out — failed sources with their code and message, and each file's SHA-256,
//! bytes and rows.

use serde::Serialize;
use serde_json::value::RawValue;

use crate::domain::{Export, PluginStamp, Source, SourceStatus};

/// The sentence the upstream puts in every `meta.json`.
pub const HELP_STRING: &str = "Contained in this archive are your requested resources. If you need help or have any questions, please contact Red Hat Support.";

#[derive(Serialize)]
struct Meta<'a> {
    exported_by: &'a str,
    export_date: String,
    export_org_id: &'a str,
    file_meta: Vec<FileMeta<'a>>,
    help_string: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_files: Vec<FailedFile<'a>>,
}

#[derive(Serialize)]
struct FileMeta<'a> {
    filename: String,
    application: &'a str,
    resource: &'a str,
    filters: Option<&'a RawValue>,
    sha256: &'a str,
    bytes: u64,
    rows: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plugin: Option<&'a PluginStamp>,
}

#[derive(Serialize)]
struct FailedFile<'a> {
    filename: String,
    application: &'a str,
    resource: &'a str,
    filters: Option<&'a RawValue>,
    error: FailedError<'a>,
}

#[derive(Serialize)]
struct FailedError<'a> {
    code: String,
    message: &'a str,
}

/// The archive entry name of a source's data.
pub fn file_name(export: &Export, source: &Source) -> String {
    format!("{}.{}", source.id, export.format.extension())
}

/// `meta.json`: compact JSON, delivered files in request order, then failed ones.
pub fn meta_json(export: &Export) -> String {
    let file_meta = export
        .sources
        .iter()
        .filter_map(|source| {
            let delivery = source.delivery.as_ref()?;
            (source.status == SourceStatus::Complete).then(|| FileMeta {
                filename: file_name(export, source),
                application: source.application.as_str(),
                resource: source.resource.as_str(),
                filters: source.filters.as_deref(),
                sha256: &delivery.sha256,
                bytes: delivery.bytes,
                rows: delivery.rows,
                plugin: delivery.plugin.as_ref(),
            })
        })
        .collect();
    let failed_files = export
        .sources
        .iter()
        .filter(|source| source.status == SourceStatus::Failed)
        .map(|source| FailedFile {
            filename: file_name(export, source),
            application: source.application.as_str(),
            resource: source.resource.as_str(),
            filters: source.filters.as_deref(),
            error: FailedError {
                code: source.code.unwrap_or_default().to_string(),
                message: source.message.as_deref().unwrap_or_default(),
            },
        })
        .collect();
    serde_json::to_string(&Meta {
        exported_by: &export.owner.username,
        export_date: export.created_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        export_org_id: export.owner.org_id.as_str(),
        file_meta,
        help_string: HELP_STRING,
        failed_files,
    })
    .expect("meta.json always serialises")
}

/// `README.md`, in the upstream's outline. Filters are listed in the tenant's key order (stable),
/// and values are rendered as JSON when they are not strings.
pub fn readme(export: &Export) -> String {
    let mut text = String::from("# Export Manifest\n\n## Exported Information\n");
    text.push_str(&format!("- **Exported by**: {}\n", export.owner.username));
    text.push_str(&format!("- **Org ID**: {}\n", export.owner.org_id));
    text.push_str(&format!(
        "- **Export Date**: {}\n\n",
        export.created_at.format("%Y-%m-%dT%H:%M:%SZ")
    ));
    text.push_str("## Data Details\n");
    let delivered: Vec<&Source> = export
        .sources
        .iter()
        .filter(|source| source.status == SourceStatus::Complete)
        .collect();
    if delivered.is_empty() {
        text.push_str("No data was found.\n\n");
    } else {
        text.push_str("This archive contains the following data:\n\n");
        for source in delivered {
            text.push_str(&format!("### {}\n", file_name(export, source)));
            push_source(&mut text, source);
            if let Some(delivery) = &source.delivery {
                text.push_str(&format!("- **SHA-256**: {}\n", delivery.sha256));
                text.push_str(&format!("- **Bytes**: {}\n", delivery.bytes));
                if let Some(rows) = delivery.rows {
                    text.push_str(&format!("- **Rows**: {rows}\n"));
                }
            }
            text.push('\n');
        }
    }
    text.push_str("## Failed Files\n");
    let failed: Vec<&Source> = export
        .sources
        .iter()
        .filter(|source| source.status == SourceStatus::Failed)
        .collect();
    if failed.is_empty() {
        text.push_str("No failures reported.\n\n");
    } else {
        for source in failed {
            text.push_str(&format!("### {} (Failed)\n", file_name(export, source)));
            push_source(&mut text, source);
            text.push_str(&format!(
                "- **Error Code**: {}\n- **Error Message**: {}\n\n",
                source.code.unwrap_or_default(),
                source.message.as_deref().unwrap_or_default()
            ));
        }
    }
    text.push_str(
        "## Help and Support\nIf you have any questions, or need support with this service, please contact Red Hat Support or visit the [Export Service GitHub repo](https://github.com/RedHatInsights/export-service-go/).\n",
    );
    text
}

fn push_source(text: &mut String, source: &Source) {
    text.push_str(&format!("- **Application**: {}\n", source.application));
    text.push_str(&format!("- **Resource**: {}\n", source.resource));
    let filters: Option<serde_json::Map<String, serde_json::Value>> = source
        .filters
        .as_deref()
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .filter(|map: &serde_json::Map<_, _>| !map.is_empty());
    match filters {
        None => text.push_str("- **Filters**: None\n"),
        Some(filters) => {
            text.push_str("- **Filters**: \n");
            for (key, value) in filters {
                let value = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                };
                text.push_str(&format!("  - {key}: {value}\n"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Delivery, ExportStatus, Format, IdentityKind, Owner};
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    fn export() -> Export {
        let source = |id: u128, status, filters: Option<&str>| Source {
            id: Uuid::from_u128(id).into(),
            application: "app".into(),
            resource: format!("res{id}").into(),
            filters: filters.map(|text| RawValue::from_string(text.into()).unwrap()),
            status,
            code: (status == SourceStatus::Failed).then_some(503),
            message: (status == SourceStatus::Failed).then(|| "backend down".into()),
            delivery: (status == SourceStatus::Complete).then(|| Delivery {
                object_key: "k".into(),
                sha256: "ab".repeat(32),
                bytes: 42,
                rows: Some(3),
                plugin: None,
            }),
            last_error: None,
        };
        Export {
            id: Uuid::nil().into(),
            owner: Owner {
                org_id: "org1".into(),
                account_id: String::new(),
                // A System owner: the key lists asserted below show the kind adds no field.
                kind: IdentityKind::System,
                username: "alice".into(),
            },
            name: "n".into(),
            format: Format::Json,
            status: ExportStatus::Running,
            request_id: None,
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            completed_at: None,
            expires_at: Utc::now(),
            sources: vec![
                source(1, SourceStatus::Complete, Some(r#"{"z":"1","a":2}"#)),
                source(2, SourceStatus::Failed, None),
            ],
            archive: None,
            failure: None,
        }
    }

    #[test]
    fn meta_json_has_upstream_fields_and_ours() {
        let meta: serde_json::Value = serde_json::from_str(&meta_json(&export())).unwrap();
        let keys: Vec<&str> = meta
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "exported_by",
                "export_date",
                "export_org_id",
                "file_meta",
                "help_string",
                "failed_files"
            ]
        );
        assert_eq!(meta["exported_by"], "alice");
        assert_eq!(meta["export_date"], "2026-01-02T03:04:05Z");
        assert_eq!(
            meta["file_meta"][0]["filename"],
            format!("{}.json", Uuid::from_u128(1))
        );
        assert_eq!(meta["file_meta"][0]["rows"], 3);
        assert_eq!(meta["file_meta"][0]["bytes"], 42);
        assert_eq!(meta["failed_files"][0]["error"]["code"], "503");
        assert_eq!(meta["failed_files"][0]["error"]["message"], "backend down");
        assert_eq!(meta["help_string"], HELP_STRING);
    }

    #[test]
    fn readme_lists_files_filters_in_order_and_failures() {
        let text = readme(&export());
        assert!(text.starts_with(
            "# Export Manifest\n\n## Exported Information\n- **Exported by**: alice\n"
        ));
        assert!(
            text.contains("- **Filters**: \n  - z: 1\n  - a: 2\n"),
            "{text}"
        );
        assert!(text.contains(&format!("### {}.json (Failed)", Uuid::from_u128(2))));
        assert!(text.contains("- **Error Code**: 503\n- **Error Message**: backend down"));
        assert!(!text.contains("No failures reported."));
        assert!(text.ends_with("export-service-go/).\n"));
    }
}
