//! OIDC bearer tokens on the internal API against a real local identity provider: an HTTP
//! server publishing a discovery document and a JWKS with keys generated at test time. Every
//! refusal case, no PSK fallback for a failed token, PSKs still working without a token, and
//! a rotated key picked up once the cache ages.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request};

const AUDIENCE: &str = "export-service";

/// A signing key and its public JWK.
struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    jwk: Value,
}

impl SigningKey {
    fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
        // An uncompressed P-256 point: 0x04, then x and y.
        let point = pair.public_key().as_ref();
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Self {
            kid: kid.to_owned(),
            jwk: json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                        "x": b64(&point[1..33]), "y": b64(&point[33..65])}),
            pkcs8,
        }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// The identity provider: discovery document and key set, keys changeable while it runs.
struct Provider {
    issuer: String,
    keys: Arc<Mutex<Vec<Value>>>,
}

impl Provider {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let issuer = format!("http://{address}/realms/test");
        let published = Arc::new(Mutex::new(keys.iter().map(|key| key.jwk.clone()).collect()));
        let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/certs")});
        let app = Router::new()
            .route(
                "/realms/test/.well-known/openid-configuration",
                get(move || async move { Json(discovery) }),
            )
            .route(
                "/realms/test/certs",
                get(|State(keys): State<Arc<Mutex<Vec<Value>>>>| async move {
                    Json(json!({"keys": *keys.lock().unwrap()}))
                }),
            )
            .with_state(published.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            issuer,
            keys: published,
        }
    }

    fn publish(&self, key: &SigningKey) {
        self.keys.lock().unwrap().push(key.jwk.clone());
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(issuer: &str, client: &str) -> Value {
    json!({"iss": issuer, "aud": AUDIENCE, "azp": client, "sub": client,
           "iat": now(), "exp": now() + 300})
}

async fn spawn(issuer: &str, cache: &str) -> TestApp {
    TestApp::spawn_with(&[
        ("OIDC_ENABLED", "true"),
        ("OIDC_ISSUER_URL", issuer),
        ("OIDC_CLIENT_ID", AUDIENCE),
        ("OIDC_PROVIDER_TIMEOUT", "2s"),
        ("OIDC_JWKS_CACHE_DURATION", cache),
        (
            "OIDC_APPLICATIONS",
            r#"{"exampleApp": "example-client", "otherApp": ["other-client"]}"#,
        ),
    ])
    .await
}

/// Uploads to `source` of `application` with `token` (and `psk`, when given).
async fn upload(
    app: &TestApp,
    export: &str,
    application: &str,
    source: &str,
    token: Option<&str>,
    psk: Option<&str>,
) -> (u16, String) {
    let mut request = app
        .client
        .post(app.internal_url(&format!(
            "/app/export/v1/{export}/{application}/{source}/upload"
        )))
        .header("content-type", "text/csv")
        .body("a,b\n1,2\n");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(psk) = psk {
        request = request.header("x-rh-exports-psk", psk);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.text().await.unwrap_or_default(),
    )
}

/// An export with one source of each application.
async fn two_sources(app: &TestApp, caller: &Caller) -> Value {
    app.create(
        caller,
        export_request(
            "oidc",
            "csv",
            &[("exampleApp", "exampleResource"), ("otherApp", "events")],
        ),
    )
    .await
}

#[tokio::test]
async fn tokens_are_checked_for_signature_issuer_audience_time_and_application() {
    let key = SigningKey::generate("key-1");
    let provider = Provider::start(&[&key]).await;
    let app = spawn(&provider.issuer, "5m").await;
    let caller = Caller::user("org-oidc", "ida");
    let created = two_sources(&app, &caller).await;
    let export = created["id"].as_str().unwrap();
    let example = created["sources"][0]["id"].as_str().unwrap();
    let other = created["sources"][1]["id"].as_str().unwrap();
    let issuer = provider.issuer.as_str();
    let refused = |case: &str, (status, body): (u16, String), expected: u16, part: &str| {
        assert_eq!(status, expected, "{case}: {body}");
        assert!(body.contains(part), "{case}: {body}");
    };

    let mut expired = claims(issuer, "example-client");
    expired["exp"] = json!(now() - 120);
    refused(
        "expired",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&key.sign(&expired)),
            None,
        )
        .await,
        401,
        "expired",
    );
    let mut audience = claims(issuer, "example-client");
    audience["aud"] = json!("someone-else");
    refused(
        "wrong audience",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&key.sign(&audience)),
            None,
        )
        .await,
        401,
        "audience",
    );
    refused(
        "wrong issuer",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&key.sign(&claims("http://127.0.0.1:1/realms/evil", "example-client"))),
            None,
        )
        .await,
        401,
        "another issuer",
    );
    refused(
        "wrong application",
        upload(
            &app,
            export,
            "otherApp",
            other,
            Some(&key.sign(&claims(issuer, "example-client"))),
            None,
        )
        .await,
        403,
        "client 'example-client' may not deliver for application 'otherApp'",
    );
    let stranger = SigningKey::generate("key-unpublished");
    refused(
        "unpublished key",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&stranger.sign(&claims(issuer, "example-client"))),
            None,
        )
        .await,
        401,
        "does not publish",
    );
    // Another key pair under the published key's id.
    let forger = SigningKey::generate("key-1");
    refused(
        "forged signature",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&forger.sign(&claims(issuer, "example-client"))),
            None,
        )
        .await,
        401,
        "signature",
    );
    refused(
        "not a JWT",
        upload(&app, export, "exampleApp", example, Some("not.a.jwt"), None).await,
        401,
        "malformed",
    );
    // A failed token is not rescued by a valid PSK.
    refused(
        "failed token with a PSK",
        upload(
            &app,
            export,
            "exampleApp",
            example,
            Some(&key.sign(&expired)),
            Some("psk-example"),
        )
        .await,
        401,
        "expired",
    );
    assert_eq!(
        app.metric(r#"export_service_refusals_total{limit="oidc_token"}"#)
            .await,
        Some(8.0)
    );

    // A good token delivers; the PSK still works for a caller without a token.
    let (status, body) = upload(
        &app,
        export,
        "exampleApp",
        example,
        Some(&key.sign(&claims(issuer, "example-client"))),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = upload(&app, export, "otherApp", other, None, Some("psk-other")).await;
    assert_eq!(status, 202, "{body}");
    app.wait_for_status(&caller, export, "complete").await;
}

#[tokio::test]
async fn error_reports_take_tokens_and_rotated_keys_are_picked_up() {
    let first = SigningKey::generate("key-a");
    let provider = Provider::start(&[&first]).await;
    let app = spawn(&provider.issuer, "1s").await;
    let caller = Caller::user("org-rotate", "rita");
    let created = two_sources(&app, &caller).await;
    let export = created["id"].as_str().unwrap();
    let report = |source: &str, application: &str, token: String| {
        app.client
            .post(app.internal_url(&format!(
                "/app/export/v1/{export}/{application}/{source}/error"
            )))
            .bearer_auth(token)
            .json(&json!({"message": "cannot", "error": 500}))
            .send()
    };
    // The first key verifies; a key published later is unknown until the cache ages.
    let reply = report(
        created["sources"][0]["id"].as_str().unwrap(),
        "exampleApp",
        first.sign(&claims(&provider.issuer, "example-client")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 202, "{}", reply.text().await.unwrap());
    let second = SigningKey::generate("key-b");
    provider.publish(&second);
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let reply = report(
        created["sources"][1]["id"].as_str().unwrap(),
        "otherApp",
        second.sign(&claims(&provider.issuer, "other-client")),
    )
    .await
    .unwrap();
    assert_eq!(reply.status(), 202, "{}", reply.text().await.unwrap());
    app.wait_for_status(&caller, export, "failed").await;
}

#[tokio::test]
async fn an_unreachable_provider_is_a_503_not_a_401() {
    // Nothing listens on the issuer's port.
    let issuer = format!(
        "http://127.0.0.1:{}/realms/gone",
        crate::helpers::free_port()
    );
    let app = spawn(&issuer, "5m").await;
    let caller = Caller::user("org-down", "dan");
    let created = app
        .create(
            &caller,
            export_request("down", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let key = SigningKey::generate("k");
    let (status, body) = upload(
        &app,
        created["id"].as_str().unwrap(),
        "exampleApp",
        created["sources"][0]["id"].as_str().unwrap(),
        Some(&key.sign(&claims(&issuer, "example-client"))),
        None,
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("identity provider could not be reached"),
        "{body}"
    );
}
