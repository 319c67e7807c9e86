//! The `OIDC_*` settings: bearer tokens on the internal API (the upstream's names; the
//! application mapping and its claim are ours).

use std::collections::BTreeMap;

use super::{ConfigError, Reader, invalid};
use crate::oidc::OidcConfig;

/// `None` unless `OIDC_ENABLED` is true; then the issuer, the audience and the mapping of
/// clients to applications must be set.
pub(super) fn oidc_config(reader: &Reader<'_>) -> Result<Option<OidcConfig>, ConfigError> {
    if !reader.boolean("OIDC_ENABLED", false)? {
        return Ok(None);
    }
    let required = |name: &'static str| {
        reader
            .0
            .get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| invalid(name, "must be set when OIDC_ENABLED is true".into()))
    };
    let issuer_url = required("OIDC_ISSUER_URL")?;
    if !(issuer_url.starts_with("https://") || issuer_url.starts_with("http://")) {
        return Err(invalid(
            "OIDC_ISSUER_URL",
            format!("must be an http(s) URL, got '{issuer_url}'"),
        ));
    }
    let config = OidcConfig {
        issuer_url,
        client_id: required("OIDC_CLIENT_ID")?,
        provider_timeout: reader.duration("OIDC_PROVIDER_TIMEOUT", 10)?,
        jwks_cache_duration: reader.duration("OIDC_JWKS_CACHE_DURATION", 300)?,
        application_claim: reader
            .0
            .get("OIDC_APPLICATION_CLAIM")
            .map(str::trim)
            .filter(|claim| !claim.is_empty())
            .unwrap_or("azp")
            .to_owned(),
        applications: applications(&required("OIDC_APPLICATIONS")?)?,
    };
    if config.provider_timeout.is_zero() {
        return Err(invalid(
            "OIDC_PROVIDER_TIMEOUT",
            "must be greater than zero".into(),
        ));
    }
    Ok(Some(config))
}

/// `OIDC_APPLICATIONS`: `{"<application>": "<client id>"}` or `{"<application>": ["<client
/// id>", …]}`.
fn applications(text: &str) -> Result<BTreeMap<String, Vec<String>>, ConfigError> {
    let shape = || {
        invalid(
            "OIDC_APPLICATIONS",
            "expected a JSON object of application → client id (or a list of client ids), \
             e.g. {\"exampleApp\": \"example-app-client\"}"
                .into(),
        )
    };
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|_| shape())?;
    object
        .into_iter()
        .map(|(application, clients)| {
            let clients = match clients {
                serde_json::Value::String(client) => vec![client],
                serde_json::Value::Array(items) => items
                    .into_iter()
                    .map(|item| item.as_str().map(str::to_owned).ok_or_else(shape))
                    .collect::<Result<_, _>>()?,
                _ => return Err(shape()),
            };
            Ok((application, clients))
        })
        .collect()
}

#[cfg(test)]
mod tests {

    use super::super::config_of as config;

    #[test]
    fn off_by_default_and_complete_when_on() {
        assert!(config(&[]).unwrap().oidc.is_none());
        let on = config(&[
            ("OIDC_ENABLED", "true"),
            ("OIDC_ISSUER_URL", "https://sso.example.com/realms/x"),
            ("OIDC_CLIENT_ID", "export-service"),
            (
                "OIDC_APPLICATIONS",
                r#"{"exampleApp": "a", "otherApp": ["b", "c"]}"#,
            ),
        ])
        .unwrap()
        .oidc
        .unwrap();
        assert_eq!(on.provider_timeout.as_secs(), 10);
        assert_eq!(on.jwks_cache_duration.as_secs(), 300);
        assert_eq!(on.application_claim, "azp");
        assert_eq!(on.applications["otherApp"], ["b", "c"]);
    }

    #[test]
    fn missing_or_malformed_settings_are_named() {
        let base = [
            ("OIDC_ENABLED", "true"),
            ("OIDC_ISSUER_URL", "https://sso.example.com"),
            ("OIDC_CLIENT_ID", "export-service"),
            ("OIDC_APPLICATIONS", r#"{"exampleApp": "a"}"#),
        ];
        for (dropped, name) in [
            (1, "OIDC_ISSUER_URL"),
            (2, "OIDC_CLIENT_ID"),
            (3, "OIDC_APPLICATIONS"),
        ] {
            let pairs: Vec<_> = base
                .iter()
                .enumerate()
                .filter(|(index, _)| *index != dropped)
                .map(|(_, pair)| *pair)
                .collect();
            assert!(config(&pairs).unwrap_err().contains(name), "{name}");
        }
        let mut bad = base.to_vec();
        bad[3] = ("OIDC_APPLICATIONS", r#"{"exampleApp": 7}"#);
        assert!(config(&bad).unwrap_err().contains("OIDC_APPLICATIONS"));
        bad[3] = base[3];
        bad[1] = ("OIDC_ISSUER_URL", "sso.example.com");
        assert!(config(&bad).unwrap_err().contains("http(s) URL"));
    }
}
