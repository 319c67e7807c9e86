//! The issuer's signing keys: found through its discovery document
//! (`<issuer>/.well-known/openid-configuration` → `jwks_uri`), fetched and kept for
//! `OIDC_JWKS_CACHE_DURATION`, and fetched again early when a token names a key the cache does
//! not hold, so a key rotation is picked up without waiting for the cache to age. Fetches, even
//! failed ones, are at least [`REFRESH_FLOOR`] apart; while the provider is down the keys
//! already fetched serve for [`STALE_GRACE`] past their lifetime.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::{OidcConfig, OidcError};

/// The least time between two fetches, successful or not, unless the cache lifetime is
/// shorter (a flood of tokens with made-up key ids, or a provider that is down, must not turn
/// into a flood of calls to the provider, each holding up token checks).
const REFRESH_FLOOR: Duration = Duration::from_secs(10);

/// How long past their lifetime fetched keys are still used while the provider cannot be
/// reached; after that tokens are refused (503) until it answers again.
const STALE_GRACE: Duration = Duration::from_secs(3600);

#[derive(Deserialize)]
struct Discovery {
    jwks_uri: String,
}

#[derive(Default)]
struct Cached {
    keys: HashMap<String, DecodingKey>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last attempt, successful or not.
    attempted: Option<Instant>,
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
        let stale = cached
            .fetched
            .is_none_or(|fetched| fetched.elapsed() >= self.lifetime);
        let missing = !cached.keys.contains_key(kid);
        let floor = REFRESH_FLOOR.min(self.lifetime);
        let may_fetch = cached
            .attempted
            .is_none_or(|attempted| attempted.elapsed() >= floor);
        let mut failure = None;
        if (stale || missing) && may_fetch {
            cached.attempted = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    cached.keys = keys;
                    cached.fetched = Some(Instant::now());
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot fetch the OIDC keys");
                    failure = Some(error);
                }
            }
        }
        let expired = cached
            .fetched
            .is_some_and(|fetched| fetched.elapsed() >= self.lifetime + STALE_GRACE);
        if expired {
            cached.keys.clear();
        }
        match cached.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None => Err(match failure {
                Some(error) => error,
                None if cached.fetched.is_none() || expired => OidcError::ProviderUnavailable(
                    "no signing keys fetched yet; retrying shortly".into(),
                ),
                None => OidcError::UnknownKey(kid.to_owned()),
            }),
        }
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
