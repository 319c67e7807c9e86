//! Generated source data and the checks of a downloaded archive.

use std::io::{Read, Seek};

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What an archive must hold for one delivered source.
pub struct Expected<'a> {
    /// The source's id (the entry is `<source>.<format>`).
    pub source: &'a str,
    /// The export's format extension.
    pub format: &'a str,
    /// SHA-256 (hex) of the entry's expected content.
    pub sha256: String,
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks a downloaded archive: a readable ZIP whose `meta.json` lists exactly the `delivered`
/// sources with each entry's real SHA-256 and size, entries with the expected content, and the
/// `failed` sources under `failed_files`. Returns `meta.json`.
pub fn check_archive(
    archive: impl Read + Seek,
    delivered: &[Expected<'_>],
    failed: &[&str],
) -> Value {
    let mut zip = zip::ZipArchive::new(archive).expect("the archive is a valid ZIP");
    let meta: Value = {
        let mut text = String::new();
        zip.by_name("meta.json")
            .expect("meta.json in the archive")
            .read_to_string(&mut text)
            .unwrap();
        serde_json::from_str(&text).expect("meta.json is JSON")
    };
    assert!(zip.by_name("README.md").is_ok(), "README.md in the archive");
    let files = meta["file_meta"].as_array().expect("file_meta");
    assert_eq!(
        files.len(),
        delivered.len(),
        "delivered files in meta.json: {meta}"
    );
    for expected in delivered {
        let name = format!("{}.{}", expected.source, expected.format);
        let listed = files
            .iter()
            .find(|file| file["filename"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} missing from meta.json: {meta}"));
        let mut entry = zip
            .by_name(&name)
            .unwrap_or_else(|_| panic!("{name} missing from the archive"));
        let mut hasher = Sha256::new();
        let bytes =
            std::io::copy(&mut entry, &mut hasher).expect("the entry decompresses (CRC checked)");
        let actual = hex::encode(hasher.finalize());
        assert_eq!(
            listed["sha256"],
            actual.as_str(),
            "meta.json's sha256 of {name}"
        );
        assert_eq!(listed["bytes"], bytes, "meta.json's size of {name}");
        assert_eq!(actual, expected.sha256, "content of {name}");
    }
    let failed_files: Vec<&str> = meta["failed_files"]
        .as_array()
        .map(|files| {
            files
                .iter()
                .filter_map(|file| file["filename"].as_str())
                .collect()
        })
        .unwrap_or_default();
    for source in failed {
        assert!(
            failed_files.iter().any(|name| name.starts_with(source)),
            "{source} missing from failed_files: {meta}"
        );
    }
    meta
}

/// Rows of a generated CSV: `id,name,value` then `rows` deterministic rows.
pub fn csv_rows(rows: std::ops::Range<u64>) -> String {
    let mut text = String::new();
    for row in rows {
        text.push_str(&format!(
            "{row},name-{row},{}\n",
            row.wrapping_mul(7919) % 100_003
        ));
    }
    text
}
