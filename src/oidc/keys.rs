//! The issuer's signing keys: found through its discovery document
//! (`<issuer>/.well-known/openid-configuration` → `jwks_uri`), fetched and kept for
//! `OIDC_JWKS_CACHE_DURATION`, and fetched again early (at most once per
//! [`REFRESH_FLOOR`]) when a token names a key the cache does not hold, so a key rotation is
//! picked up without waiting for the cache to age.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{OidcConfig, OidcError};

/// The least time between two fetches caused by unknown key ids (a flood of forged tokens
/// must not turn into a flood of calls to the provider).
const REFRESH_FLOOR: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

/// The issuer's keys, by key id.
pub struct KeyCache {
    client: reqwest::Client,
    discovery_url: String,
    lifetime: Duration,
    cached: Mutex<Cached>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeyCache")
            .field("discovery_url", &self.discovery_url)
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// An empty cache for `config`'s issuer.
    pub fn new(config: &OidcConfig) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(config.provider_timeout)
                .build()
                .expect("a plain HTTP client always builds"),
            discovery_url: format!(
                "{}/.well-known/openid-configuration",
                config.issuer_url.trim_end_matches('/')
            ),
            lifetime: config.jwks_cache_duration,
            cached: Mutex::new(Cached::default()),
        }
    }

    /// The key `kid` (fetching the key set when the cache is stale or lacks it).
    pub async fn key(&self, kid: &str) -> Result<DecodingKey, OidcError> {
        let mut cached = self.cached.lock().await;
        let age = cached.fetched.map(|fetched| fetched.elapsed());
        let stale = age.is_none_or(|age| age >= self.lifetime);
        let missing = !cached.keys.contains_key(kid);
        if stale || (missing && age.is_none_or(|age| age >= REFRESH_FLOOR)) {
            match self.fetch().await {
                Ok(keys) => {
                    cached.keys = keys;
                    cached.fetched = Some(Instant::now());
                }
                // Keys fetched before still verify while the provider is briefly away.
                Err(error) if cached.keys.contains_key(kid) => {
                    tracing::warn!(%error, "cannot refresh the OIDC keys; using the cached ones");
                }
                Err(error) => return Err(error),
            }
        }
        cached
            .keys
            .get(kid)
            .cloned()
            .ok_or_else(|| OidcError::UnknownKey(kid.to_owned()))
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, OidcError> {
        let discovery: Discovery = self.get_json(&self.discovery_url).await?;
        let set: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    keys.insert(kid, key);
                }
                Err(error) => tracing::warn!(%kid, %error, "skipping an unusable OIDC key"),
            }
        }
        tracing::info!(keys = keys.len(), "fetched the OIDC signing keys");
        Ok(keys)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, OidcError> {
        let unavailable = |error: reqwest::Error| OidcError::ProviderUnavailable(error.to_string());
        self.client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(unavailable)?
            .json()
            .await
            .map_err(unavailable)
    }
}
