//! The tenant's side of the demo: create an export on the public API, follow its status until
//! it is final, download the archive and read its manifest (`meta.json`) and entry list.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::DemoError;

/// What to request and where to put it.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Base URL of the public API (`http://host:8000`).
    pub public_url: String,
    /// The tenant's organisation.
    pub org_id: String,
    /// The tenant's user name.
    pub username: String,
    /// The export's name.
    pub name: String,
    /// `json` or `csv`.
    pub format: String,
    /// (application, resource) pairs.
    pub sources: Vec<(String, String)>,
    /// Where the archive is written.
    pub output: PathBuf,
    /// How long to wait for a final status.
    pub timeout: Duration,
}

/// Where an export stands, as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The export's status.
    pub status: String,
    /// Sources that answered (uploaded or failed).
    pub answered: usize,
    /// All sources.
    pub total: usize,
}

impl Progress {
    fn of(status: &Value) -> Self {
        let sources = status["sources"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        Self {
            status: status["status"].as_str().unwrap_or("unknown").to_owned(),
            answered: sources
                .iter()
                .filter(|source| source["status"] != "pending")
                .count(),
            total: sources.len(),
        }
    }

    /// Whether the export will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "complete" | "partial" | "failed")
    }

    /// A one-line bar: `[#####-----] 1/2 sources answered · running`.
    pub fn bar(&self) -> String {
        const WIDTH: usize = 20;
        let filled = (self.answered * WIDTH).checked_div(self.total).unwrap_or(0);
        format!(
            "[{}{}] {}/{} sources answered · {}",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            self.answered,
            self.total,
            self.status
        )
    }
}

/// A downloaded export.
#[derive(Debug)]
pub struct Downloaded {
    /// The export's id.
    pub export_id: String,
    /// The final status document.
    pub status: Value,
    /// Where the archive was written (absent when the export failed: there is none).
    pub archive: Option<PathBuf>,
    /// The archive's entries: name and uncompressed size.
    pub entries: Vec<(String, u64)>,
    /// The parsed `meta.json`.
    pub manifest: Option<Value>,
}

/// Creates the export, reports progress through `on_progress` whenever it changes, then
/// downloads the archive and reads it.
pub async fn run(
    settings: &ExportSettings,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Downloaded, DemoError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("a plain HTTP client always builds");
    let base = settings.public_url.trim_end_matches('/');
    let identity = identity_header(&settings.org_id, &settings.username);
    let request = json!({
        "name": settings.name,
        "format": settings.format,
        "sources": settings.sources.iter()
            .map(|(application, resource)| json!({"application": application, "resource": resource}))
            .collect::<Vec<_>>(),
    });
    let created = client
        .post(format!("{base}/api/export/v1/exports"))
        .header("x-rh-identity", &identity)
        .json(&request)
        .send()
        .await?;
    let created = expect_json(created, 202).await?;
    let export_id = created["id"]
        .as_str()
        .ok_or_else(|| DemoError::Api(format!("the create response has no id: {created}")))?
        .to_owned();
    let started = Instant::now();
    let mut last: Option<Progress> = None;
    let status = loop {
        let response = client
            .get(format!("{base}/api/export/v1/exports/{export_id}/status"))
            .header("x-rh-identity", &identity)
            .send()
            .await?;
        let status = expect_json(response, 200).await?;
        let progress = Progress::of(&status);
        if last.as_ref() != Some(&progress) {
            on_progress(&progress);
        }
        if progress.is_final() {
            break status;
        }
        last = Some(progress);
        if started.elapsed() > settings.timeout {
            return Err(DemoError::TimedOut(settings.timeout, status.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if status["status"] == "failed" {
        return Ok(Downloaded {
            export_id,
            status,
            archive: None,
            entries: Vec::new(),
            manifest: None,
        });
    }
    let mut response = client
        .get(format!("{base}/api/export/v1/exports/{export_id}"))
        .header("x-rh-identity", &identity)
        .send()
        .await?;
    if response.status() != 200 {
        return Err(unexpected(response, 200).await);
    }
    let mut file = tokio::fs::File::create(&settings.output)
        .await
        .map_err(|error| DemoError::File(settings.output.clone(), error))?;
    while let Some(chunk) = response.chunk().await? {
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(|error| DemoError::File(settings.output.clone(), error))?;
    }
    // tokio writes in the background: flush so the whole archive is on disk before reading it.
    tokio::io::AsyncWriteExt::flush(&mut file)
        .await
        .map_err(|error| DemoError::File(settings.output.clone(), error))?;
    drop(file);
    let (entries, manifest) = read_archive(&settings.output)?;
    Ok(Downloaded {
        export_id,
        status,
        archive: Some(settings.output.clone()),
        entries,
        manifest: Some(manifest),
    })
}

/// The entries of an archive and its parsed `meta.json`.
pub fn read_archive(path: &Path) -> Result<(Vec<(String, u64)>, Value), DemoError> {
    let bad = |error: &dyn std::fmt::Display| DemoError::Archive(error.to_string());
    let file = std::fs::File::open(path).map_err(|error| DemoError::File(path.into(), error))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|error| bad(&error))?;
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(|error| bad(&error))?;
        entries.push((
            entry.name().map_err(|error| bad(&error))?.into_owned(),
            entry.size(),
        ));
    }
    let mut text = String::new();
    archive
        .by_name("meta.json")
        .map_err(|error| bad(&error))?
        .read_to_string(&mut text)
        .map_err(|error| bad(&error))?;
    let manifest = serde_json::from_str(&text).map_err(|error| bad(&error))?;
    Ok((entries, manifest))
}

/// The `x-rh-identity` header of a user of `org_id`.
pub fn identity_header(org_id: &str, username: &str) -> String {
    let identity = json!({"identity": {
        "account_number": "", "org_id": org_id, "type": "User",
        "internal": {"org_id": org_id},
        "user": {"username": username, "is_org_admin": false}
    }});
    base64::engine::general_purpose::STANDARD.encode(identity.to_string())
}

async fn expect_json(response: reqwest::Response, status: u16) -> Result<Value, DemoError> {
    if response.status().as_u16() != status {
        return Err(unexpected(response, status).await);
    }
    Ok(response.json().await?)
}

async fn unexpected(response: reqwest::Response, expected: u16) -> DemoError {
    let status = response.status().as_u16();
    let url = response.url().path().to_owned();
    let body = response.text().await.unwrap_or_default();
    DemoError::Api(format!(
        "{url} answered {status} (expected {expected}): {body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_answered_sources_and_knows_final_statuses() {
        let status = json!({"status": "running", "sources": [
            {"status": "complete"}, {"status": "pending"}, {"status": "failed"}, {"status": "pending"}
        ]});
        let progress = Progress::of(&status);
        assert_eq!((progress.answered, progress.total), (2, 4));
        assert!(!progress.is_final());
        assert_eq!(
            progress.bar(),
            "[##########----------] 2/4 sources answered · running"
        );
        for status in ["complete", "partial", "failed"] {
            assert!(Progress::of(&json!({"status": status, "sources": []})).is_final());
        }
        assert_eq!(
            Progress::of(&json!({"status": "pending"})).bar(),
            "[--------------------] 0/0 sources answered · pending"
        );
    }

    #[test]
    fn the_identity_header_is_base64_json_naming_org_and_user() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(identity_header("org9", "zoë"))
            .unwrap();
        let identity: Value = serde_json::from_slice(&decoded).unwrap();
        assert_eq!(identity["identity"]["org_id"], "org9");
        assert_eq!(identity["identity"]["user"]["username"], "zoë");
    }
}
