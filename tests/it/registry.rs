//! The plugin registry through its admin API and the CLI: every refusal, binding, rollback,
//! deletion, history, and the watched plugin directory.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Caller, TestApp, export_request, plugin_component};

pub(crate) const TOKEN: &str = "registry-admin-token-0123456789";

pub(crate) async fn admin_app() -> TestApp {
    TestApp::spawn_with(&[("ADMIN_TOKEN", TOKEN)]).await
}

fn admin_url(app: &TestApp, path: &str) -> String {
    format!("http://{}/admin/v1{path}", app.private)
}

pub(crate) async fn push(app: &TestApp, bytes: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .post(admin_url(app, "/plugins"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

pub(crate) async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, admin_url(app, path))
        .bearer_auth(TOKEN)
        .header("x-admin-user", "alice-operator");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    (
        response.status().as_u16(),
        response.json().await.unwrap_or_default(),
    )
}

/// Uploads a small CSV to a new export's exampleApp source; returns the status and the plugin
/// version that ran (if any).
async fn upload_once(app: &TestApp) -> (u16, Option<String>) {
    upload_to(app, "exampleResource").await
}

/// [`upload_once`] for another resource of exampleApp.
async fn upload_to(app: &TestApp, resource: &str) -> (u16, Option<String>) {
    let (status, version, _) = upload_for(app, "org-1", resource).await;
    (status, version)
}

/// [`upload_to`] in an export of organisation `org`; also returns the export's id.
pub(crate) async fn upload_for(
    app: &TestApp,
    org: &str,
    resource: &str,
) -> (u16, Option<String>, String) {
    let caller = Caller::user(org, "alice");
    let created = app
        .create(
            &caller,
            export_request("r", "csv", &[("exampleApp", resource)]),
        )
        .await;
    let export = created["id"].as_str().unwrap().to_owned();
    let reply = app
        .upload(
            &export,
            "exampleApp",
            created["sources"][0]["id"].as_str().unwrap(),
            Some("psk-example"),
            "id,name\n1,a\n",
        )
        .await;
    let version = reply.json()["plugin"]["version"]
        .as_str()
        .map(str::to_owned);
    (reply.status, version, export)
}

/// Uploads for `org` until one runs `version`, or panics; returns the last export's id.
pub(crate) async fn wait_for_org_version(
    app: &TestApp,
    org: &str,
    resource: &str,
    version: Option<&str>,
) -> String {
    let started = Instant::now();
    loop {
        let (status, seen, export) = upload_for(app, org, resource).await;
        assert_eq!(status, 202);
        if seen.as_deref() == version {
            return export;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{org}/{resource}: still {seen:?}, wanted {version:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Uploads until one runs `version` (bindings apply within about a second), or panics.
pub(crate) async fn wait_for_version(app: &TestApp, version: Option<&str>) {
    wait_for_version_of(app, "exampleResource", version).await;
}

/// [`wait_for_version`] for another resource of exampleApp.
async fn wait_for_version_of(app: &TestApp, resource: &str, version: Option<&str>) {
    let started = Instant::now();
    loop {
        let (status, seen) = upload_to(app, resource).await;
        assert_eq!(status, 202);
        if seen.as_deref() == version {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still {seen:?}, wanted {version:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_a_token_configured_the_admin_api_is_closed_and_a_bad_token_is_refused() {
    let closed = TestApp::spawn().await;
    let response = closed
        .client
        .get(admin_url(&closed, "/plugins"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("ADMIN_TOKEN"),
        "{body}"
    );

    let app = admin_app().await;
    for (header, expected) in [
        (None, "missing"),
        (
            Some("Bearer wrong-token-0123456789".to_owned()),
            "not valid",
        ),
        (Some(format!("Basic {TOKEN}")), "missing"),
        (Some(format!("Bearer {TOKEN}x")), "not valid"),
    ] {
        let mut request = app
            .client
            .post(admin_url(&app, "/plugins"))
            .body(plugin_component("tagger_v1.wasm"));
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains(expected),
            "{body}"
        );
    }
    // Nothing was stored by the refused requests.
    let (status, listed) = call(&app, reqwest::Method::GET, "/plugins", None).await;
    assert_eq!((status, listed["data"].as_array().unwrap().len()), (200, 0));
}

#[tokio::test]
async fn unusable_components_are_refused_with_the_reason() {
    let app = admin_app().await;
    for (bytes, reason) in [
        (
            b"\0asm not really".to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            plugin_component("hostile_wrong_world.wasm"),
            "exports none of the export-service:plugin interfaces",
        ),
        (
            plugin_component("hostile_capability.wasm"),
            "imports something the host does not grant",
        ),
    ] {
        let (status, body) = push(&app, bytes).await;
        assert_eq!(status, 422, "{body}");
        assert!(body["message"].as_str().unwrap().contains(reason), "{body}");
    }
    let (status, body) = push(&app, Vec::new()).await;
    assert_eq!(status, 400, "{body}");

    // A self-test the plugin does not pass refuses the push, with the plugin's violations.
    let request = json!({
        "component": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            plugin_component("required_fields.wasm"),
        ),
        "self_test": {
            "input": "id,amount\n1,2\n,x\n", "from": "csv", "to": "json",
            "config": {"required": ["id"], "numeric": ["amount"]},
        },
    });
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "/plugins",
        Some(request.clone()),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("self-test"),
        "{body}"
    );
    assert_eq!(body["violations"].as_array().unwrap().len(), 2, "{body}");
    let (_, listed) = call(&app, reqwest::Method::GET, "/plugins", None).await;
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        0,
        "nothing stored"
    );

    // With a sample that passes, it is stored (and the same bytes again are no new version).
    let mut passing = request;
    passing["self_test"]["input"] = json!("id,amount\n1,2\n");
    let (status, body) = call(
        &app,
        reqwest::Method::POST,
        "/plugins",
        Some(passing.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"]["name"], "required-fields");
    assert!(body["self_test"]["output_bytes"].as_u64().unwrap() > 0);
    let (status, body) = call(&app, reqwest::Method::POST, "/plugins", Some(passing)).await;
    assert_eq!((status, body["created"].clone()), (200, json!(false)));
}

#[tokio::test]
async fn bindings_switch_roll_back_refuse_what_they_must_and_keep_their_history() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    use reqwest::Method;
    // Refusals: unknown version, unknown application or resource, a non-object configuration,
    // nothing to roll back to.
    for (body, path, reason) in [
        (
            json!({"plugin": "tagger", "version": "9.9.9"}),
            "/bindings/exampleApp",
            "has no version 9.9.9",
        ),
        (
            json!({"plugin": "nope", "version": "1.0.0"}),
            "/bindings/exampleApp",
            "plugin nope has no version",
        ),
        (
            json!({"plugin": "tagger", "version": "1.0.0"}),
            "/bindings/unknownApp",
            "not one the service exports",
        ),
        (
            json!({"plugin": "tagger", "version": "1.0.0", "resource": "nope"}),
            "/bindings/exampleApp",
            "has no resource 'nope'",
        ),
        (
            json!({"plugin": "tagger", "version": "1.0.0", "config": [1]}),
            "/bindings/exampleApp",
            "JSON object",
        ),
    ] {
        let (status, reply) = call(&app, Method::PUT, path, Some(body)).await;
        assert_eq!(status, 422, "{reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(reason),
            "{reply}"
        );
    }
    let (status, reply) = call(&app, Method::POST, "/bindings/exampleApp/rollback", None).await;
    assert_eq!(status, 409, "{reply}");
    assert_eq!(upload_once(&app).await, (202, None));

    let bind = |version: &'static str| {
        call(
            &app,
            Method::PUT,
            "/bindings/exampleApp",
            Some(json!({"plugin": "tagger", "version": version, "config": {"note": version}})),
        )
    };
    let (status, bound) = bind("1.0.0").await;
    assert_eq!(status, 200, "{bound}");
    assert_eq!(bound["created_by"], "alice-operator");
    wait_for_version(&app, Some("1.0.0")).await;
    assert_eq!(bind("2.0.0").await.0, 200);
    wait_for_version(&app, Some("2.0.0")).await;

    // A bound version cannot be deleted; an unbound one can.
    let (status, reply) = call(&app, Method::DELETE, "/plugins/tagger/versions/2.0.0", None).await;
    assert_eq!(status, 409, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("exampleApp/*"),
        "{reply}"
    );

    let (status, rolled) = call(&app, Method::POST, "/bindings/exampleApp/rollback", None).await;
    assert_eq!((status, rolled["version"].clone()), (200, json!("1.0.0")));
    assert_eq!(
        rolled["config"],
        json!({"note": "1.0.0"}),
        "the configuration comes back too"
    );
    wait_for_version(&app, Some("1.0.0")).await;
    let (status, _) = call(&app, Method::DELETE, "/plugins/tagger/versions/2.0.0", None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, Method::DELETE, "/plugins/tagger/versions/2.0.0", None).await;
    assert_eq!(status, 404);
    let (status, reply) = call(
        &app,
        Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": "tagger", "version": "2.0.0"})),
    )
    .await;
    assert_eq!(status, 422, "binding a deleted version: {reply}");

    // The history: newest first, who and what.
    let (_, history) = call(&app, Method::GET, "/bindings/exampleApp/history", None).await;
    let versions: Vec<&str> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0", "1.0.0"]);

    // Unbinding: uploads run without a plugin again.
    let (status, _) = call(&app, Method::DELETE, "/bindings/exampleApp", None).await;
    assert_eq!(status, 200);
    wait_for_version(&app, None).await;
    let (_, active) = call(&app, Method::GET, "/bindings", None).await;
    assert_eq!(active["data"], json!([]));
    let (status, reply) = call(&app, Method::DELETE, "/bindings/exampleApp", None).await;
    assert_eq!(status, 404, "nothing is bound any more: {reply}");

    // Bound per resource only, the application-wide scope has nothing to roll back or remove:
    // the refusals say where the application is bound.
    let (status, _) = call(
        &app,
        Method::PUT,
        "/bindings/otherApp",
        Some(json!({"plugin": "tagger", "version": "1.0.0", "resource": "events"})),
    )
    .await;
    assert_eq!(status, 200);
    for (method, path, expected) in [
        (Method::POST, "/bindings/otherApp/rollback", 409),
        (Method::DELETE, "/bindings/otherApp", 404),
    ] {
        let (status, reply) = call(&app, method, path, None).await;
        assert_eq!(status, expected, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains("otherApp is bound as otherApp/events")
                && message.contains("--resource"),
            "{reply}"
        );
    }
    let (status, _) = call(
        &app,
        Method::DELETE,
        "/bindings/otherApp?resource=events",
        None,
    )
    .await;
    assert_eq!(status, 200);

    // The admin API is in its own OpenAPI document.
    let document: Value = app
        .client
        .get(admin_url(&app, "/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/plugins",
        "/bindings/{application}",
        "/bindings/{application}/rollback",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
}

#[tokio::test]
async fn a_resource_binding_overrides_the_application_binding() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    use reqwest::Method;
    let (status, _) = call(
        &app,
        Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": "tagger", "version": "1.0.0"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        Method::PUT,
        "/bindings/exampleApp",
        Some(json!({"plugin": "tagger", "version": "2.0.0", "resource": "anotherExampleResource"})),
    )
    .await;
    assert_eq!(status, 200);
    wait_for_version(&app, Some("1.0.0")).await;
    wait_for_version_of(&app, "anotherExampleResource", Some("2.0.0")).await;
    assert_eq!(upload_once(&app).await, (202, Some("1.0.0".to_owned())));
}

#[tokio::test]
async fn an_organisations_binding_applies_to_its_exports_only_and_is_managed_on_its_own() {
    use reqwest::Method;
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    let bind = |path: &'static str, body: Value| call(&app, Method::PUT, path, Some(body));
    assert_eq!(
        bind(
            "/bindings/exampleApp",
            json!({"plugin": "tagger", "version": "1.0.0"})
        )
        .await
        .0,
        200
    );
    // One organisation's binding of the whole application (scope in the body) and another's of
    // one resource (scope in the query).
    let (status, bound) = bind(
        "/bindings/exampleApp",
        json!({"plugin": "tagger", "version": "2.0.0", "org_id": "org-2"}),
    )
    .await;
    assert_eq!(status, 200, "{bound}");
    assert_eq!(
        (&bound["org_id"], &bound["scope"], &bound["action"]),
        (&json!("org-2"), &json!("org"), &json!("bind"))
    );
    let (status, bound) = bind(
        "/bindings/exampleApp?resource=anotherExampleResource&org_id=org-3",
        json!({"plugin": "tagger", "version": "2.0.0"}),
    )
    .await;
    assert_eq!(status, 200, "{bound}");
    assert_eq!(bound["scope"], "org-resource");

    let org2 = wait_for_org_version(&app, "org-2", "exampleResource", Some("2.0.0")).await;
    wait_for_org_version(&app, "org-3", "anotherExampleResource", Some("2.0.0")).await;
    for (org, resource) in [
        ("org-1", "exampleResource"),
        ("org-1", "anotherExampleResource"),
        ("org-3", "exampleResource"),
    ] {
        let (status, version, _) = upload_for(&app, org, resource).await;
        assert_eq!(
            (status, version.as_deref()),
            (202, Some("1.0.0")),
            "{org}/{resource} keeps the application's binding"
        );
    }
    // The archive says which binding processed the file.
    let caller = Caller::user("org-2", "alice");
    app.wait_for_status(&caller, &org2, "complete").await;
    let (_, archive) = app.download(&caller, &org2).await;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(archive)).unwrap();
    let mut meta = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("meta.json").unwrap(), &mut meta).unwrap();
    let meta: Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(
        meta["file_meta"][0]["plugin"],
        json!({"name": "tagger", "version": "2.0.0", "digest": meta["file_meta"][0]["plugin"]["digest"], "scope": "org"}),
        "{meta}"
    );
    // Metrics count organisation bindings by scope, without naming organisations.
    for (scope, resource) in [("org", "*"), ("org-resource", "anotherExampleResource")] {
        let info = format!(
            r#"export_service_plugin_binding_info{{application="exampleApp",plugin="tagger",resource="{resource}",scope="{scope}",version="2.0.0"}}"#
        );
        assert_eq!(app.metric(&info).await, Some(1.0), "{info}");
    }
    assert!(!app.metrics_text().await.contains("org-2"));

    // Refusals: the scope given twice, differently; an organisation id that is not one.
    let (status, reply) = bind(
        "/bindings/exampleApp?org_id=org-4",
        json!({"plugin": "tagger", "version": "2.0.0", "org_id": "org-5"}),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("give it once"),
        "{reply}"
    );
    let (status, reply) = bind(
        "/bindings/exampleApp",
        json!({"plugin": "tagger", "version": "2.0.0", "org_id": "org 4"}),
    )
    .await;
    assert_eq!(status, 422, "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("org_id 'org 4'"),
        "{reply}"
    );

    // Rollback and unbind act on the organisation's binding alone; naming a scope with no
    // binding says where the application is bound.
    assert_eq!(
        bind(
            "/bindings/exampleApp",
            json!({"plugin": "tagger", "version": "1.0.0", "org_id": "org-2", "config": {"n": 1}})
        )
        .await
        .0,
        200
    );
    let (status, rolled) = call(
        &app,
        Method::POST,
        "/bindings/exampleApp/rollback?org_id=org-2",
        None,
    )
    .await;
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(
        (&rolled["version"], &rolled["action"]),
        (&json!("2.0.0"), &json!("rollback"))
    );
    let (status, reply) = call(
        &app,
        Method::DELETE,
        "/bindings/exampleApp?org_id=org-9",
        None,
    )
    .await;
    assert_eq!(status, 404, "{reply}");
    let message = reply["message"].as_str().unwrap();
    assert!(
        message.contains("exampleApp/* for org org-9 is not bound")
            && message.contains("exampleApp/* for org org-2")
            && message.contains("--org"),
        "{reply}"
    );
    let (status, _) = call(
        &app,
        Method::DELETE,
        "/bindings/exampleApp?org_id=org-2",
        None,
    )
    .await;
    assert_eq!(status, 200);
    wait_for_org_version(&app, "org-2", "exampleResource", Some("1.0.0")).await;

    // The organisation's history: every change, what it was, with its configuration.
    let (_, history) = call(
        &app,
        Method::GET,
        "/bindings/exampleApp/history?org_id=org-2",
        None,
    )
    .await;
    let changes: Vec<(String, Value, Value)> = history["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["action"].as_str().unwrap().to_owned(),
                change["version"].clone(),
                change["config"].clone(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("unbind".to_owned(), Value::Null, Value::Null),
            ("rollback".to_owned(), json!("2.0.0"), Value::Null),
            ("bind".to_owned(), json!("1.0.0"), json!({"n": 1})),
            ("bind".to_owned(), json!("2.0.0"), Value::Null),
        ]
    );
    let (_, all) = call(&app, Method::GET, "/bindings/exampleApp/history", None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn the_plugin_directory_is_watched_and_changes_apply_without_a_restart() {
    let directory =
        std::env::temp_dir().join(format!("exsvc-plugins-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(
        directory.join("exampleApp.wasm"),
        plugin_component("tagger_v1.wasm"),
    )
    .unwrap();
    let app = TestApp::spawn_with(&[
        ("PLUGINS_DIR", directory.to_str().unwrap()),
        ("PLUGINS_DIR_POLL_INTERVAL", "200ms"),
    ])
    .await;
    assert_eq!(upload_once(&app).await, (202, Some("1.0.0".to_owned())));
    // Written elsewhere and renamed into place, as a ConfigMap update does.
    let staged = directory.join(".staged");
    std::fs::write(&staged, plugin_component("tagger_v2.wasm")).unwrap();
    std::fs::rename(&staged, directory.join("exampleApp.wasm")).unwrap();
    wait_for_version(&app, Some("2.0.0")).await;
    // A broken file keeps the bindings in force.
    std::fs::write(directory.join("exampleApp.wasm"), b"not wasm").unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(upload_once(&app).await, (202, Some("2.0.0".to_owned())));
    assert!(
        app.metric(r#"export_service_plugin_load_failures_total{plugin="(directory)",version=""}"#)
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
    std::fs::remove_file(directory.join("exampleApp.wasm")).unwrap();
    wait_for_version(&app, None).await;
    let _ = std::fs::remove_dir_all(directory);
}

/// Runs `export-service plugin ARGS` against `app` as operator `cli-operator`; returns whether it
/// succeeded and what it printed. Blocking: call it from a multi-threaded test.
pub(crate) fn cli(app: &TestApp) -> impl Fn(&[&str]) -> (bool, String) {
    let url = format!("http://{}", app.private);
    move |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_export-service"))
            .arg("plugin")
            .args(args)
            .env("EXPORT_ADMIN_URL", &url)
            .env("EXPORT_ADMIN_TOKEN", TOKEN)
            .env("EXPORT_ADMIN_USER", "cli-operator")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
        )
    }
}

// Multi-threaded: the CLI runs as a blocking child process while the service answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pushes_binds_rolls_back_and_removes() {
    let app = admin_app().await;
    let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist");
    let run = cli(&app);
    let v1 = dist.join("tagger_v1.wasm");
    let v2 = dist.join("tagger_v2.wasm");
    let (ok, out) = run(&["push", v1.to_str().unwrap()]);
    assert!(ok && out.contains("pushed: tagger 1.0.0"), "{out}");
    let (ok, out) = run(&["push", v1.to_str().unwrap()]);
    assert!(ok && out.contains("already stored"), "{out}");
    assert!(run(&["push", v2.to_str().unwrap()]).0);
    let (ok, out) = run(&["list"]);
    assert!(
        ok && out.contains("tagger") && out.contains("2.0.0") && out.contains("cli-operator"),
        "{out}"
    );
    let (ok, out) = run(&["bind", "exampleApp", "tagger", "2.0.0"]);
    assert!(ok && out.contains("2.0.0"), "{out}");
    let (ok, out) = run(&["bind", "exampleApp", "tagger", "3.0.0"]);
    assert!(
        !ok && out.contains("422") && out.contains("no version 3.0.0"),
        "{out}"
    );
    let (ok, out) = run(&["rm", "tagger", "2.0.0"]);
    assert!(!ok && out.contains("409"), "{out}");
    let (ok, out) = run(&["bind", "exampleApp", "tagger", "1.0.0"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["rollback", "exampleApp"]);
    assert!(
        ok && out.contains("rolled back") && out.contains("2.0.0"),
        "{out}"
    );
    let (ok, out) = run(&["bindings"]);
    assert!(
        ok && out.contains("exampleApp") && out.contains("2.0.0"),
        "{out}"
    );
    let (ok, out) = run(&["history", "exampleApp"]);
    assert!(ok && out.matches("tagger").count() == 3, "{out}");
    // One tenant's binding, its own history and its removal.
    let (ok, out) = run(&["bind", "exampleApp", "tagger", "2.0.0", "--org", "org-7"]);
    assert!(ok && out.contains("org-7"), "{out}");
    let (ok, out) = run(&["unbind", "exampleApp", "--org", "org-7"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["history", "exampleApp", "--org", "org-7"]);
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        ok && rows.len() == 2
            && rows[0].starts_with("unbind")
            && rows[1].starts_with("bind")
            && rows.iter().all(|row| row.contains("org-7")),
        "{out}"
    );
    let (ok, out) = run(&["unbind", "exampleApp", "--org", "org-7"]);
    assert!(!ok && out.contains("404") && out.contains("--org"), "{out}");
    let (ok, out) = run(&["rm", "tagger", "1.0.0"]);
    assert!(ok && out.contains("deleted: tagger 1.0.0"), "{out}");
    let (ok, out) = run(&["list", "--token", "wrong-token-0123456789"]);
    assert!(!ok && out.contains("401"), "{out}");
    wait_for_version(&app, Some("2.0.0")).await;
}

#[tokio::test]
async fn a_replica_that_cannot_load_a_version_keeps_its_previous_binding_and_says_so() {
    let database = crate::helpers::fresh_database().await;
    let bucket = format!("exsvc-test-{}", uuid::Uuid::new_v4().simple());
    let settings = [
        ("ADMIN_TOKEN", TOKEN),
        ("EXPORT_SERVICE_BUCKET", bucket.as_str()),
    ];
    let first = TestApp::spawn_on(&database, &settings).await;
    let second = TestApp::spawn_on(&database, &settings).await;
    let mut digests = Vec::new();
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        let (status, pushed) = push(&first, plugin_component(file)).await;
        assert_eq!(status, 201);
        digests.push(pushed["plugin"]["digest"].as_str().unwrap().to_owned());
    }
    let bind = |version: &str| {
        call(
            &first,
            reqwest::Method::PUT,
            "/bindings/exampleApp",
            Some(json!({"plugin": "tagger", "version": version})),
        )
    };
    assert_eq!(bind("1.0.0").await.0, 200);
    wait_for_version(&second, Some("1.0.0")).await;

    // Version 2's stored bytes, and the artefact compiled from them, go bad before the second
    // replica ever fetched them.
    let artefact: String =
        sqlx::query_scalar("SELECT object_key FROM plugin_artefacts WHERE digest = $1")
            .bind(&digests[1])
            .fetch_one(&first.pool)
            .await
            .unwrap();
    for key in [
        export_service::registry::component_key(&digests[1]),
        artefact,
    ] {
        let mut garbage: &[u8] = b"not the component that was pushed";
        first
            .store
            .put(&key, &mut garbage, "application/wasm")
            .await
            .unwrap();
    }
    assert_eq!(bind("2.0.0").await.0, 200);
    wait_for_version(&first, Some("2.0.0")).await;
    let failures = r#"export_service_plugin_load_failures_total{plugin="tagger",version="2.0.0"}"#;
    let started = Instant::now();
    while second.metric(failures).await.unwrap_or(0.0) < 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the failure was never counted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upload_once(&second).await, (202, Some("1.0.0".to_owned())));
    let info = r#"export_service_plugin_binding_info{application="exampleApp",plugin="tagger",resource="*",scope="application",version="1.0.0"}"#;
    assert_eq!(second.metric(info).await, Some(1.0));

    // A replica started now has no earlier version to keep: its uploads wait (503) rather than
    // being stored without the plugin their binding promises.
    let third = TestApp::spawn_on(&database, &settings).await;
    assert_eq!(upload_once(&third).await, (503, None));
}

#[tokio::test]
async fn an_upload_running_during_a_swap_finishes_on_the_version_it_started_with() {
    let app = admin_app().await;
    for file in ["tagger_v1.wasm", "tagger_v2.wasm"] {
        assert_eq!(push(&app, plugin_component(file)).await.0, 201);
    }
    let bind = |version: &'static str| {
        call(
            &app,
            reqwest::Method::PUT,
            "/bindings/exampleApp",
            Some(json!({"plugin": "tagger", "version": version})),
        )
    };
    assert_eq!(bind("1.0.0").await.0, 200);
    wait_for_version(&app, Some("1.0.0")).await;

    let invocations = r#"export_service_plugin_invocations_total{plugin="tagger",version="1.0.0"}"#;
    let before = app.metric(invocations).await.unwrap_or(0.0);
    let created = app
        .create(
            &Caller::user("org-1", "alice"),
            export_request("r", "csv", &[("exampleApp", "exampleResource")]),
        )
        .await;
    let upload = crate::data_path::start_streaming_upload(
        &app,
        created["id"].as_str().unwrap(),
        created["sources"][0]["id"].as_str().unwrap(),
        b"id,name\n1,a\n",
    )
    .await;
    let started = Instant::now();
    while app.metric(invocations).await.unwrap_or(0.0) <= before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the upload never took its plugin"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Version 2 comes into force while the upload is still running.
    assert_eq!(bind("2.0.0").await.0, 200);
    wait_for_version(&app, Some("2.0.0")).await;
    upload.sender.send(Ok(b"2,b\n".to_vec())).await.unwrap();
    drop(upload.sender);
    let reply = upload.reply.await.unwrap();
    assert_eq!(reply.status, 202, "{}", reply.text);
    assert_eq!(reply.json()["plugin"]["version"], "1.0.0");
}
