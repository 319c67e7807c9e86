//! Idempotent creates: the `Idempotency-Key` a client sends with `POST /exports`, and the
//! fingerprint of the request body that a retry under the same key must match.

use std::fmt;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// How long a key answers with the export it created (a day, as Stripe keeps them).
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The longest key accepted.
pub const MAX_KEY_LENGTH: usize = 255;

/// A client's `Idempotency-Key`: 1 to 255 visible ASCII characters (a UUID, typically).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

/// Why an `Idempotency-Key` header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters (a UUID, say); \
     got {0}"
)]
pub struct InvalidIdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header's value.
    pub fn parse(value: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        let refuse = |what: String| Err(InvalidIdempotencyKey(what));
        if value.is_empty() {
            return refuse("an empty value".into());
        }
        if value.len() > MAX_KEY_LENGTH {
            return refuse(format!("{} bytes", value.len()));
        }
        if !value.iter().all(u8::is_ascii_graphic) {
            return refuse("spaces, control or non-ASCII characters".into());
        }
        Ok(Self(String::from_utf8_lossy(value).into_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

/// The SHA-256 (hex) of a create request's JSON with object keys sorted: the same request
/// resent with other whitespace or key order has the same fingerprint.
pub fn request_fingerprint(request: &Value) -> String {
    let mut canonical = Vec::new();
    write_canonical(request, &mut canonical);
    hex::encode(Sha256::digest(&canonical))
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by_key(|(name, _)| *name);
            out.push(b'{');
            for (index, (name, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(name.clone()).to_string().as_bytes());
                out.push(b':');
                write_canonical(value, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_visible_ascii_up_to_255_bytes() {
        let uuid = "0d7ac5c6-3c59-4c7e-9a8e-4bd2f2b3a1f0";
        assert_eq!(
            IdempotencyKey::parse(uuid.as_bytes()).unwrap().as_str(),
            uuid
        );
        assert!(IdempotencyKey::parse(&[b'k'; MAX_KEY_LENGTH]).is_ok());
        for (bad, says) in [
            (&b""[..], "an empty value"),
            (&[b'k'; MAX_KEY_LENGTH + 1][..], "256 bytes"),
            (&b"two words"[..], "spaces"),
            ("clé".as_bytes(), "non-ASCII"),
        ] {
            let message = IdempotencyKey::parse(bad).unwrap_err().to_string();
            assert!(
                message.contains(says) && message.contains("Idempotency-Key"),
                "{message}"
            );
        }
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_whitespace_but_not_values() {
        let request = json!({"name": "n", "format": "csv", "sources": [{"application": "a", "resource": "r"}]});
        let reordered: Value = serde_json::from_str(
            r#"{ "sources" : [ {"resource":"r","application":"a"} ], "format":"csv", "name":"n" }"#,
        )
        .unwrap();
        assert_eq!(
            request_fingerprint(&request),
            request_fingerprint(&reordered)
        );
        let other = json!({"name": "n", "format": "json", "sources": [{"application": "a", "resource": "r"}]});
        assert_ne!(request_fingerprint(&request), request_fingerprint(&other));
        // Array order is meaningful: the sources' order is the archive's.
        let swapped = json!({"sources": [2, 1]});
        assert_ne!(
            request_fingerprint(&json!({"sources": [1, 2]})),
            request_fingerprint(&swapped)
        );
    }
}
