//! Object keys: where an export's sources and archive live. All of an export's objects share
//! one prefix, so deleting an export is deleting a prefix.

use crate::domain::{ExportId, Format, OrgId, SourceId};

/// Renders object keys from the configured template
/// (default `{org_id}/{export_id}/{source_id}.{format}`).
#[derive(Debug, Clone)]
pub struct KeyLayout {
    template: String,
}

impl KeyLayout {
    /// A layout over a template already validated by the configuration.
    pub fn new(template: &str) -> Self {
        Self {
            template: template.to_owned(),
        }
    }

    /// The key of a source's data.
    pub fn source_key(
        &self,
        org_id: &OrgId,
        export_id: ExportId,
        source_id: SourceId,
        format: Format,
    ) -> String {
        self.template
            .replace("{org_id}", &escape_segment(org_id.as_str()))
            .replace("{export_id}", &export_id.to_string())
            .replace("{source_id}", &source_id.to_string())
            .replace("{format}", format.extension())
    }

    /// The prefix every object of the export starts with (ends with `/`).
    pub fn export_prefix(&self, org_id: &str, export_id: ExportId) -> String {
        let end = self
            .template
            .find("{export_id}/")
            .map(|index| index + "{export_id}/".len())
            .unwrap_or(self.template.len());
        self.template[..end]
            .replace("{org_id}", &escape_segment(org_id))
            .replace("{export_id}", &export_id.to_string())
    }

    /// The key of the archive built by packaging attempt `attempt`: inside the export's prefix,
    /// and distinct per attempt, so two workers never write the same object; the attempt that
    /// records its archive deletes the others.
    pub fn archive_key(&self, org_id: &str, export_id: ExportId, attempt: i32) -> String {
        format!(
            "{}{export_id}.{attempt}.zip",
            self.export_prefix(org_id, export_id)
        )
    }
}

/// Makes a tenant-controlled value safe as one key segment: anything but ASCII letters, digits,
/// `-` and `_` is percent-encoded (so `/`, `.` and `..` cannot change the key's structure).
pub fn escape_segment(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    if escaped.is_empty() {
        escaped.push_str("%00");
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn default_layout() {
        let layout = KeyLayout::new("{org_id}/{export_id}/{source_id}.{format}");
        let export = Uuid::nil();
        let source = Uuid::from_u128(1);
        assert_eq!(
            layout.source_key(&"org1".into(), export.into(), source.into(), Format::Csv),
            format!("org1/{export}/{source}.csv")
        );
        assert_eq!(
            layout.export_prefix("org1", export.into()),
            format!("org1/{export}/")
        );
        assert_eq!(
            layout.archive_key("org1", export.into(), 2),
            format!("org1/{export}/{export}.2.zip")
        );
    }

    #[test]
    fn hostile_org_ids_cannot_escape_their_segment() {
        let layout = KeyLayout::new("exports/{org_id}/{export_id}/{source_id}.{format}");
        let key = layout.source_key(
            &"../../etc/passwd".into(),
            Uuid::nil().into(),
            Uuid::nil().into(),
            Format::Json,
        );
        assert!(
            key.starts_with("exports/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd/"),
            "{key}"
        );
        assert_eq!(key.matches('/').count(), 3);
        assert_eq!(escape_segment(""), "%00");
        assert_eq!(escape_segment("a.b"), "a%2Eb");
    }
}
