//! OpenID Connect bearer tokens on the internal API, beside the pre-shared keys (the upstream's
//! `OIDC_*` settings). A token is accepted when its signature checks against the issuer's
//! published keys, its `iss` is `OIDC_ISSUER_URL`, its `aud` holds `OIDC_CLIENT_ID`, it is
//! within its validity, and its client claim maps (through `OIDC_APPLICATIONS`) to the
//! application in the URL. A request that carries a bearer token is judged by it alone: a
//! failed token is refused even when a valid PSK is present.

mod keys;

use std::collections::BTreeMap;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, decode, decode_header};
use serde_json::Value;

pub use keys::KeyCache;

/// The token algorithms accepted: the asymmetric ones identity providers sign with.
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How much clock difference with the issuer is tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The OIDC settings (present when `OIDC_ENABLED` is true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// The issuer (`OIDC_ISSUER_URL`): tokens' `iss`, and the base of the discovery document.
    pub issuer_url: String,
    /// The audience tokens must name (`OIDC_CLIENT_ID`).
    pub client_id: String,
    /// How long a call to the provider may take (`OIDC_PROVIDER_TIMEOUT`).
    pub provider_timeout: Duration,
    /// How long fetched keys are trusted before they are fetched again
    /// (`OIDC_JWKS_CACHE_DURATION`).
    pub jwks_cache_duration: Duration,
    /// The claim naming the calling client (`OIDC_APPLICATION_CLAIM`, default `azp`).
    pub application_claim: String,
    /// Which client may deliver for which application (`OIDC_APPLICATIONS`): application →
    /// client ids.
    pub applications: BTreeMap<String, Vec<String>>,
}

/// Why a bearer token was refused. The `Display` text is the client's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    /// Not a JWT, or signed with an algorithm not accepted (401).
    #[error("the bearer token is malformed: {0}")]
    Malformed(String),
    /// Its key is not among the issuer's published keys (401).
    #[error("the bearer token is signed with a key the issuer does not publish (kid {0})")]
    UnknownKey(String),
    /// The signature does not match (401).
    #[error("the bearer token's signature is invalid")]
    BadSignature,
    /// Past `exp` or before `nbf` (401).
    #[error("the bearer token has expired or is not valid yet")]
    Expired,
    /// `iss` is not `OIDC_ISSUER_URL` (401).
    #[error("the bearer token was issued by another issuer")]
    WrongIssuer,
    /// `aud` does not name `OIDC_CLIENT_ID` (401).
    #[error("the bearer token is not meant for this service (audience)")]
    WrongAudience,
    /// Another validation failed (401).
    #[error("the bearer token is invalid: {0}")]
    Invalid(String),
    /// The client claim is absent (401).
    #[error("the bearer token has no '{0}' claim naming the client")]
    NoClient(String),
    /// The client may not deliver for the URL's application (403).
    #[error("client '{client}' may not deliver for application '{application}'")]
    WrongApplication {
        /// The token's client.
        client: String,
        /// The URL's application.
        application: String,
    },
    /// The provider's keys could not be fetched (503).
    #[error("the identity provider could not be reached: {0}")]
    ProviderUnavailable(String),
}

impl OidcError {
    /// Whether the caller is authenticated but not allowed (403), as opposed to not
    /// authenticated (401) or the provider being down (503).
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Self::WrongApplication { .. })
    }
}

/// Verifies bearer tokens against one issuer.
#[derive(Debug)]
pub struct OidcVerifier {
    config: OidcConfig,
    keys: KeyCache,
}

impl OidcVerifier {
    /// A verifier for `config`; keys are fetched on first use.
    pub fn new(config: OidcConfig) -> Self {
        Self {
            keys: KeyCache::new(&config),
            config,
        }
    }

    /// Checks `token` and that its client may deliver for `application`.
    pub async fn authorize(&self, token: &str, application: &str) -> Result<(), OidcError> {
        let header =
            decode_header(token).map_err(|error| OidcError::Malformed(error.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(OidcError::Malformed(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let kid = header.kid.clone().unwrap_or_default();
        let key = self.keys.key(&kid).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer_url]);
        validation.set_audience(&[&self.config.client_id]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let claims = decode::<Value>(token, &key, &validation)
            .map_err(|error| classify(&error))?
            .claims;
        let client = claims
            .get(&self.config.application_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| OidcError::NoClient(self.config.application_claim.clone()))?;
        let allowed = self
            .config
            .applications
            .get(application)
            .is_some_and(|clients| clients.iter().any(|allowed| allowed == client));
        if !allowed {
            return Err(OidcError::WrongApplication {
                client: client.to_owned(),
                application: application.to_owned(),
            });
        }
        Ok(())
    }
}

fn classify(error: &jsonwebtoken::errors::Error) -> OidcError {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::InvalidSignature => OidcError::BadSignature,
        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => OidcError::Expired,
        ErrorKind::InvalidIssuer => OidcError::WrongIssuer,
        ErrorKind::InvalidAudience => OidcError::WrongAudience,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => OidcError::Malformed(error.to_string()),
        _ => OidcError::Invalid(error.to_string()),
    }
}
