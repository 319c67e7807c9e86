//! Authentication of source applications on the internal API with pre-shared keys
//! (`x-rh-exports-psk`), compared in constant time. With keys bound to applications, a key is
//! valid only for its own application, and the caller must then prove that the source belongs
//! to that application (the upstream only compared the URL's application).

use subtle::ConstantTimeEq;

use std::collections::BTreeMap;

use super::secret::Secret;

/// The internal API's pre-shared keys (`EXPORTS_PSKS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PskConfig {
    /// No keys: the internal API refuses everything.
    None,
    /// Authentication switched off (`DISABLE_SERVICE_TO_SERVICE_PSK_AUTH=true`).
    Disabled,
    /// Keys bound to applications: a key is valid only for its application's sources.
    PerApplication(BTreeMap<String, Secret<String>>),
    /// Legacy flat list: any key is valid for any source.
    Shared(Vec<Secret<String>>),
}

/// Why a request was refused. The `Display` text is the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PskError {
    /// No keys are configured: the internal API is closed (403).
    #[error("the internal API is closed: no pre-shared keys are configured")]
    Closed,
    /// The header is absent or repeated (400).
    #[error("missing x-rh-exports-psk header")]
    Missing,
    /// Flat list: the key is not one of them (401).
    #[error("invalid x-rh-exports-psk header")]
    Invalid,
    /// Application-bound: no key for the URL's application (403).
    #[error("no PSK configured for application")]
    NoKeyForApplication,
    /// Application-bound: the key is not the application's (401).
    #[error("invalid x-rh-exports-psk header for application")]
    InvalidForApplication,
}

/// What a valid key allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Any source (flat list, or authentication disabled).
    AnySource,
    /// Only sources of this application.
    Application(String),
}

/// Checks the request's key values (all occurrences of the header) for `url_application`.
pub fn authorize(
    config: &PskConfig,
    values: &[&[u8]],
    url_application: &str,
) -> Result<Grant, PskError> {
    let key = || match values {
        [single] => Ok(*single),
        _ => Err(PskError::Missing),
    };
    match config {
        PskConfig::Disabled => Ok(Grant::AnySource),
        PskConfig::None => Err(PskError::Closed),
        PskConfig::Shared(keys) => {
            let presented = key()?;
            // Compare with every key so the time does not depend on which one matches.
            let matches = keys.iter().fold(false, |found, candidate| {
                found | equal(candidate, presented)
            });
            if matches {
                Ok(Grant::AnySource)
            } else {
                Err(PskError::Invalid)
            }
        }
        PskConfig::PerApplication(keys) => {
            let presented = key()?;
            let expected = keys
                .get(url_application)
                .ok_or(PskError::NoKeyForApplication)?;
            if equal(expected, presented) {
                Ok(Grant::Application(url_application.to_owned()))
            } else {
                Err(PskError::InvalidForApplication)
            }
        }
    }
}

fn equal(expected: &Secret<String>, presented: &[u8]) -> bool {
    bool::from(expected.expose().as_bytes().ct_eq(presented))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn per_app() -> PskConfig {
        PskConfig::PerApplication(BTreeMap::from([
            ("inventory".to_string(), Secret::new("k-inv".to_string())),
            (
                "notifications".to_string(),
                Secret::new("k-not".to_string()),
            ),
        ]))
    }

    #[test]
    fn application_bound_keys() {
        assert_eq!(
            authorize(&per_app(), &[b"k-inv"], "inventory"),
            Ok(Grant::Application("inventory".into()))
        );
        assert_eq!(
            authorize(&per_app(), &[b"k-not"], "inventory"),
            Err(PskError::InvalidForApplication)
        );
        assert_eq!(
            authorize(&per_app(), &[b"k-inv"], "other"),
            Err(PskError::NoKeyForApplication)
        );
        assert_eq!(
            authorize(&per_app(), &[], "inventory"),
            Err(PskError::Missing)
        );
        assert_eq!(
            authorize(&per_app(), &[b"k-inv", b"k-inv"], "inventory"),
            Err(PskError::Missing)
        );
        assert_eq!(
            authorize(&per_app(), &[b""], "inventory"),
            Err(PskError::InvalidForApplication)
        );
    }

    #[test]
    fn shared_keys_disabled_and_closed() {
        let shared = PskConfig::Shared(vec![Secret::new("a".into()), Secret::new("b".into())]);
        assert_eq!(
            authorize(&shared, &[b"b"], "anything"),
            Ok(Grant::AnySource)
        );
        assert_eq!(
            authorize(&shared, &[b"c"], "anything"),
            Err(PskError::Invalid)
        );
        assert_eq!(
            authorize(&shared, &[b""], "anything"),
            Err(PskError::Invalid)
        );
        assert_eq!(
            authorize(&PskConfig::Disabled, &[], "x"),
            Ok(Grant::AnySource)
        );
        assert_eq!(
            authorize(&PskConfig::None, &[b"a"], "x"),
            Err(PskError::Closed)
        );
    }
}
