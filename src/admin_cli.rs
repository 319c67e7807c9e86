//! `export-service plugin push|list|bindings|bind|unbind|rollback|history|rm`: the registry's
//! admin API from the command line, with readable output.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Where the admin API is and who is calling it.
#[derive(Args, Debug, Clone)]
pub struct AdminTarget {
    /// The internal listener of any replica.
    #[arg(
        long,
        env = "EXPORT_ADMIN_URL",
        default_value = "http://127.0.0.1:10000"
    )]
    admin_url: String,
    /// The operators' token (ADMIN_TOKEN of the service).
    #[arg(long, env = "EXPORT_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Who is making the change (recorded in the binding history).
    #[arg(long = "as", env = "EXPORT_ADMIN_USER")]
    operator: Option<String>,
}

/// The registry commands.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Upload a plugin version (name and version come from the component's `describe`).
    Push {
        #[command(flatten)]
        target: AdminTarget,
        /// The component (.wasm).
        component: PathBuf,
        /// A sample to self-test the component on before it is accepted.
        #[arg(long, requires_all = ["from", "to"])]
        sample: Option<PathBuf>,
        /// The sample's format: csv or json.
        #[arg(long, value_parser = crate::parse_format)]
        from: Option<export_service::domain::Format>,
        /// The format to produce: csv or json.
        #[arg(long, value_parser = crate::parse_format)]
        to: Option<export_service::domain::Format>,
        /// Configuration for the self-test (JSON file).
        #[arg(long, requires = "sample")]
        sample_config: Option<PathBuf>,
        /// A directory of test cases the version carries, one `*.json` file each:
        /// `{"input_file": "bad.csv" (or "input": "..."), "from": "csv", "to": "json",
        /// "config": {...}, "expect": {"outcome": "violations", "violations": [{"row": 2}]}}`
        /// or `"expect": {"outcome": "accepted"}`. They run at push and before every bind.
        #[arg(long = "test", value_name = "DIR")]
        tests: Option<PathBuf>,
    },
    /// List plugin versions (of one plugin when named).
    List {
        #[command(flatten)]
        target: AdminTarget,
        /// A plugin's name.
        name: Option<String>,
    },
    /// List the bindings in force.
    Bindings {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Bind an application (or one resource, for every tenant or one) to a plugin version.
    Bind {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// The plugin's name.
        plugin: String,
        /// The version.
        version: String,
        /// One resource (default: every resource of the application).
        #[arg(long)]
        resource: Option<String>,
        /// One organisation (tenant) only; its binding wins over the application's.
        #[arg(long = "org", value_name = "ORG_ID")]
        org: Option<String>,
        /// The plugin's configuration (JSON file).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Remove an application's binding.
    Unbind {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// One resource (default: the binding of every resource).
        #[arg(long)]
        resource: Option<String>,
        /// One organisation's binding (default: the binding of every organisation).
        #[arg(long = "org", value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// Bind the previous version again.
    Rollback {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// One resource (default: the binding of every resource).
        #[arg(long)]
        resource: Option<String>,
        /// One organisation's binding (default: the binding of every organisation).
        #[arg(long = "org", value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// Show an application's binding changes, newest first.
    History {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// Only one resource's bindings (`*` for those of every resource).
        #[arg(long)]
        resource: Option<String>,
        /// Only one organisation's bindings (`*` for those of every organisation).
        #[arg(long = "org", value_name = "ORG_ID")]
        org: Option<String>,
    },
    /// Start a canary: a version for a share of tenants (or a list) beside the binding, rolled
    /// back by the service if it fails more often than the binding's version.
    Canary {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// The plugin's name.
        plugin: String,
        /// The version to try.
        version: String,
        /// One resource (default: every resource of the application).
        #[arg(long)]
        resource: Option<String>,
        /// Percentage of organisations it takes, by a stable hash of their org_id.
        #[arg(long, default_value_t = 0)]
        share: u8,
        /// An organisation it takes whatever its hash (repeatable).
        #[arg(long = "org", value_name = "ORG_ID")]
        orgs: Vec<String>,
        /// The canary's configuration (JSON file).
        #[arg(long)]
        config: Option<PathBuf>,
        /// How much its failure rate may exceed the binding's before it is rolled back
        /// (default 0.05).
        #[arg(long)]
        max_failure_rate: Option<f64>,
        /// Uploads it must process before it is judged (default 20).
        #[arg(long)]
        min_uploads: Option<u64>,
    },
    /// Make the running canary's version the binding for everyone.
    Promote {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// One resource (default: the canary of every resource).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Stop the running canary; its tenants go back to the binding.
    Abort {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
        /// One resource (default: the canary of every resource).
        #[arg(long)]
        resource: Option<String>,
    },
    /// Show an application's canaries with their counts, newest first.
    Canaries {
        #[command(flatten)]
        target: AdminTarget,
        /// The application.
        application: String,
    },
    /// Delete a plugin version (refused while it is bound).
    Rm {
        #[command(flatten)]
        target: AdminTarget,
        /// The plugin's name.
        plugin: String,
        /// The version.
        version: String,
    },
}

impl AdminCommand {
    /// The replica and operator the command is for.
    fn target(&self) -> &AdminTarget {
        match self {
            Self::Push { target, .. }
            | Self::List { target, .. }
            | Self::Bindings { target }
            | Self::Bind { target, .. }
            | Self::Unbind { target, .. }
            | Self::Rollback { target, .. }
            | Self::History { target, .. }
            | Self::Canary { target, .. }
            | Self::Promote { target, .. }
            | Self::Abort { target, .. }
            | Self::Canaries { target, .. }
            | Self::Rm { target, .. } => target,
        }
    }
}

/// Runs one registry command.
pub fn run(command: AdminCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(execute(Client::new(command.target().clone())?, command))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    operator: String,
}

impl Client {
    fn new(target: AdminTarget) -> anyhow::Result<Self> {
        let Some(token) = target.token else {
            bail!("no admin token: pass --token or set EXPORT_ADMIN_TOKEN");
        };
        let operator = target
            .operator
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "operator".into());
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(300))
                .build()?,
            base: format!("{}/admin/v1", target.admin_url.trim_end_matches('/')),
            token,
            operator,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Option<Value>> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("x-admin-user", &self.operator);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Option<Value> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let message = value
                .as_ref()
                .and_then(|value| value["message"].as_str())
                .unwrap_or(&text);
            let mut report = format!("{status}: {message}");
            for violation in value
                .as_ref()
                .and_then(|value| value["violations"].as_array())
                .into_iter()
                .flatten()
            {
                report.push_str(&format!(
                    "\n  row {} field {}: {}",
                    violation["row"],
                    violation["field"].as_str().unwrap_or("-"),
                    violation["message"].as_str().unwrap_or("")
                ));
            }
            bail!(report);
        }
        Ok(value)
    }
}

/// The test cases of `directory` (one `*.json` file each, in name order), with `input_file`
/// read into `input` and the file's stem as the default name.
fn read_test_cases(directory: &std::path::Path) -> anyhow::Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(directory)
        .with_context(|| format!("reading {}", directory.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
        })
        .collect();
    files.sort();
    if files.is_empty() {
        anyhow::bail!("{} has no test case (*.json)", directory.display());
    }
    let mut cases = Vec::new();
    for file in files {
        let mut case = read_json(&file)?;
        let Some(fields) = case.as_object_mut() else {
            anyhow::bail!("{}: a test case is a JSON object", file.display());
        };
        if let Some(input) = fields.remove("input_file") {
            let Some(input) = input.as_str() else {
                anyhow::bail!("{}: input_file is a path", file.display());
            };
            let path = directory.join(input);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: reading {}", file.display(), path.display()))?;
            fields.insert("input".into(), Value::String(text));
        }
        if !fields.contains_key("name") {
            let stem = file
                .file_stem()
                .and_then(|stem| stem.to_str())
                .unwrap_or("case");
            fields.insert("name".into(), Value::String(stem.to_owned()));
        }
        cases.push(case);
    }
    Ok(cases)
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Writes a line for the operator.
#[expect(clippy::print_stdout, reason = "the CLI reports on stdout")]
fn say(line: &str) {
    println!("{line}");
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_binding(binding: &Value) {
    say(&format!(
        "{:<9} {:<20} {:<16} {:<10} {:<20} {:<10} {:<14} {} by {}",
        text(&binding["action"]),
        text(&binding["application"]),
        text(&binding["resource"]),
        text(&binding["org_id"]),
        text(&binding["plugin"]),
        text(&binding["version"]),
        text(&binding["digest"])
            .chars()
            .take(12)
            .collect::<String>(),
        text(&binding["created_at"]),
        text(&binding["created_by"]),
    ));
}

fn binding_header() {
    say(&format!(
        "{:<9} {:<20} {:<16} {:<10} {:<20} {:<10} {:<14} CHANGED",
        "ACTION", "APPLICATION", "RESOURCE", "ORG", "PLUGIN", "VERSION", "DIGEST"
    ));
}

/// `?resource=…&org_id=…` for the scopes given (empty when none is).
fn scope_query(resource: Option<&str>, org: Option<&str>) -> String {
    let pairs: Vec<String> = [("resource", resource), ("org_id", org)]
        .into_iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", segment(value?))))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn segment(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn canary_header() {
    say(&format!(
        "{:<11} {:<20} {:<16} {:<20} {:<10} {:>6} {:>15} {:>15}  STARTED",
        "STATE",
        "APPLICATION",
        "RESOURCE",
        "PLUGIN",
        "VERSION",
        "SHARE",
        "CANARY FAILED",
        "STABLE FAILED"
    ));
}

fn print_canary(canary: &Value) {
    let orgs = canary["org_ids"]
        .as_array()
        .filter(|orgs| !orgs.is_empty())
        .map(|orgs| {
            let names: Vec<String> = orgs.iter().map(text).collect();
            format!(" + {}", names.join(","))
        })
        .unwrap_or_default();
    say(&format!(
        "{:<11} {:<20} {:<16} {:<20} {:<10} {:>5}% {:>15} {:>15}  {} by {}{orgs}",
        text(&canary["state"]),
        text(&canary["application"]),
        text(&canary["resource"]),
        text(&canary["plugin"]),
        text(&canary["version"]),
        canary["share_percent"],
        format!("{}/{}", canary["canary_failures"], canary["canary_uploads"]),
        format!("{}/{}", canary["stable_failures"], canary["stable_uploads"]),
        text(&canary["created_at"]),
        text(&canary["created_by"]),
    ));
}

/// Promotes (`promote`) or aborts the canary running on `application` (or one resource).
async fn end_canary(
    client: &Client,
    application: &str,
    resource: Option<&str>,
    promote: bool,
) -> anyhow::Result<()> {
    use reqwest::Method;
    let (method, path, verb) = if promote {
        (Method::POST, "/canary/promote", "promoted")
    } else {
        (Method::DELETE, "/canary", "aborted")
    };
    let ended = client
        .call(
            method,
            &format!(
                "/bindings/{}{path}{}",
                segment(application),
                scope_query(resource, None)
            ),
            None,
        )
        .await?
        .unwrap_or_default();
    say(&format!("{verb}:"));
    canary_header();
    print_canary(&ended);
    Ok(())
}

async fn execute(client: Client, command: AdminCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        AdminCommand::Push {
            component,
            sample,
            from,
            to,
            sample_config,
            tests,
            ..
        } => {
            let bytes = std::fs::read(&component)
                .with_context(|| format!("reading {}", component.display()))?;
            let mut body = json!({
                "component": base64::engine::general_purpose::STANDARD.encode(&bytes),
            });
            if let (Some(sample), Some(from), Some(to)) = (sample, from, to) {
                let input = std::fs::read_to_string(&sample)
                    .with_context(|| format!("reading {}", sample.display()))?;
                let config = sample_config.as_ref().map(read_json).transpose()?;
                body["self_test"] =
                    json!({"input": input, "from": from, "to": to, "config": config});
            }
            if let Some(directory) = &tests {
                body["test_cases"] = Value::Array(read_test_cases(directory)?);
            }
            let pushed = client
                .call(Method::POST, "/plugins", Some(body))
                .await?
                .unwrap_or_default();
            let plugin = &pushed["plugin"];
            let verb = if pushed["created"] == true {
                "pushed"
            } else {
                "already stored"
            };
            say(&format!(
                "{verb}: {} {} (sha256:{}, {} bytes)",
                text(&plugin["name"]),
                text(&plugin["version"]),
                text(&plugin["digest"]),
                plugin["size_bytes"]
            ));
            if let Some(report) = pushed["self_test"].as_object() {
                say(&format!(
                    "self-test: passed ({} bytes out, {:.1} ms in the plugin)",
                    report["output_bytes"],
                    report["guest_ms"].as_f64().unwrap_or(0.0)
                ));
            }
            if let Some(count) = plugin["test_case_count"]
                .as_u64()
                .filter(|count| *count > 0)
            {
                say(&format!(
                    "test cases: {count} passed; they run again before every bind"
                ));
            }
        }
        AdminCommand::List { name, .. } => {
            let path = match &name {
                Some(name) => format!("/plugins/{}", segment(name)),
                None => "/plugins".into(),
            };
            let listed = client
                .call(Method::GET, &path, None)
                .await?
                .unwrap_or_default();
            say(&format!(
                "{:<20} {:<10} {:<14} {:>10}  {:<25} BY",
                "PLUGIN", "VERSION", "DIGEST", "BYTES", "PUSHED"
            ));
            for version in listed["data"].as_array().into_iter().flatten() {
                say(&format!(
                    "{:<20} {:<10} {:<14} {:>10}  {:<25} {}",
                    text(&version["name"]),
                    text(&version["version"]),
                    text(&version["digest"])
                        .chars()
                        .take(12)
                        .collect::<String>(),
                    version["size_bytes"],
                    text(&version["created_at"]),
                    text(&version["created_by"]),
                ));
            }
        }
        AdminCommand::Bindings { .. } => {
            let listed = client
                .call(Method::GET, "/bindings", None)
                .await?
                .unwrap_or_default();
            binding_header();
            for binding in listed["data"].as_array().into_iter().flatten() {
                print_binding(binding);
            }
        }
        AdminCommand::Bind {
            application,
            plugin,
            version,
            resource,
            org,
            config,
            ..
        } => {
            let config = config.as_ref().map(read_json).transpose()?;
            let body = json!({
                "plugin": plugin, "version": version, "resource": resource, "org_id": org,
                "config": config,
            });
            let bound = client
                .call(
                    Method::PUT,
                    &format!("/bindings/{}", segment(&application)),
                    Some(body),
                )
                .await?
                .unwrap_or_default();
            say("bound (every replica applies it within about a second):");
            binding_header();
            print_binding(&bound);
        }
        AdminCommand::Unbind {
            application,
            resource,
            org,
            ..
        } => {
            client
                .call(
                    Method::DELETE,
                    &format!(
                        "/bindings/{}{}",
                        segment(&application),
                        scope_query(resource.as_deref(), org.as_deref())
                    ),
                    None,
                )
                .await?;
            say(&format!("unbound: {application}"));
        }
        AdminCommand::Rollback {
            application,
            resource,
            org,
            ..
        } => {
            let bound = client
                .call(
                    Method::POST,
                    &format!(
                        "/bindings/{}/rollback{}",
                        segment(&application),
                        scope_query(resource.as_deref(), org.as_deref())
                    ),
                    None,
                )
                .await?
                .unwrap_or_default();
            say("rolled back to:");
            binding_header();
            print_binding(&bound);
        }
        AdminCommand::History {
            application,
            resource,
            org,
            ..
        } => {
            let listed = client
                .call(
                    Method::GET,
                    &format!(
                        "/bindings/{}/history{}",
                        segment(&application),
                        scope_query(resource.as_deref(), org.as_deref())
                    ),
                    None,
                )
                .await?
                .unwrap_or_default();
            binding_header();
            for binding in listed["data"].as_array().into_iter().flatten() {
                print_binding(binding);
                if !binding["config"].is_null() {
                    say(&format!("          config: {}", binding["config"]));
                }
            }
        }
        AdminCommand::Canary {
            application,
            plugin,
            version,
            resource,
            share,
            orgs,
            config,
            max_failure_rate,
            min_uploads,
            ..
        } => {
            let config = config.as_ref().map(read_json).transpose()?;
            let body = json!({
                "plugin": plugin, "version": version, "resource": resource,
                "share_percent": share, "org_ids": orgs, "config": config,
                "max_failure_rate": max_failure_rate, "min_uploads": min_uploads,
            });
            let started = client
                .call(
                    Method::POST,
                    &format!("/bindings/{}/canary", segment(&application)),
                    Some(body),
                )
                .await?
                .unwrap_or_default();
            say("canary running (every replica applies it within about a second):");
            canary_header();
            print_canary(&started);
        }
        AdminCommand::Promote {
            application,
            resource,
            ..
        } => end_canary(&client, &application, resource.as_deref(), true).await?,
        AdminCommand::Abort {
            application,
            resource,
            ..
        } => end_canary(&client, &application, resource.as_deref(), false).await?,
        AdminCommand::Canaries { application, .. } => {
            let listed = client
                .call(
                    Method::GET,
                    &format!("/bindings/{}/canary", segment(&application)),
                    None,
                )
                .await?
                .unwrap_or_default();
            canary_header();
            for canary in listed["data"].as_array().into_iter().flatten() {
                print_canary(canary);
                if let Some(reason) = canary["reason"].as_str() {
                    say(&format!("          reason: {reason}"));
                }
            }
        }
        AdminCommand::Rm {
            plugin, version, ..
        } => {
            client
                .call(
                    Method::DELETE,
                    &format!(
                        "/plugins/{}/versions/{}",
                        segment(&plugin),
                        segment(&version)
                    ),
                    None,
                )
                .await?;
            say(&format!("deleted: {plugin} {version}"));
        }
    }
    Ok(())
}
