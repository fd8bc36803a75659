//! The observability frame against real processes: a `quiver` broker on loopback, driven
//! by the `quiver` CLI, scraped by a real Prometheus (Debian's `prometheus` package,
//! which `scripts/test.sh` installs) loaded with `dashboards/prometheus.yml` and
//! `dashboards/alerts.yml`.
//!
//! Every PromQL expression in `dashboards/*.json` (panel targets, rows included, and
//! template variable queries) and every alert rule must answer with data. An alert's
//! condition is false on a healthy broker, so the rule is checked twice: the whole
//! expression must evaluate, and the side left of its comparison must return data.
//! A negative control (a metric the broker does not export) must fail the same check,
//! so the check cannot pass vacuously.
//!
//! Plugin series exist only once plugins run and fail, so the test uploads two WAT
//! plugins: one keeping every record, attached at the fetch stage of the topic it
//! consumes, and one that always traps, attached at the produce stage of a topic with
//! `on_error = skip` and of one with `on_error = dead-letter`, and named by a consumer
//! whose fetch must then fail.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;

/// The topic the test produces to; a plain name, so it is also a regex matching itself.
const TOPIC: &str = "observed";
/// Records produced per round and consumed back.
const RECORDS: usize = 5000;
/// What `$__rate_interval` becomes: Grafana uses at least four scrape intervals.
const RATE_INTERVAL: &str = "30s";
/// Prometheus scrapes and evaluates rules this often in the test.
const SCRAPE_INTERVAL: &str = "1s";
/// A filter keeping every record, attached at the fetch stage of [`TOPIC`].
const KEEP_PLUGIN: &str = "keep-all";
/// A filter that traps on every batch.
const TRAP_PLUGIN: &str = "trap";
/// Topic whose produce stage runs [`TRAP_PLUGIN`] with `on_error = skip`.
const SKIP_TOPIC: &str = "obs-skip";
/// Topic whose produce stage runs [`TRAP_PLUGIN`] with `on_error = dead-letter`.
const DLQ_TOPIC: &str = "obs-dlq";
/// Where [`DLQ_TOPIC`]'s failed batches go.
const DEAD_TOPIC: &str = "obs-dead";

const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
const PROMETHEUS_READY_TIMEOUT: Duration = Duration::from_secs(60);
const TARGET_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long every expression gets to return data: rates need two scrapes in their window.
const EXPRESSIONS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the negative control is given before it counts as failed, as it must.
const NEGATIVE_CONTROL_TIMEOUT: Duration = Duration::from_secs(3);
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest HTTP response read from Prometheus.
const HTTP_RESPONSE_BYTES_MAX: u64 = 16 * 1024 * 1024;

#[test]
fn every_dashboard_and_alert_expression_returns_data() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests/ has a parent")?
        .to_path_buf();
    let dashboards = repo.join("dashboards");
    let prometheus_bin = tool("prometheus")?;
    let promtool = tool("promtool")?;
    let quiver = quiver_bin()?;
    let tmp = tempfile::tempdir()?;

    // The shipped files are valid as they stand.
    run_checked(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .arg(dashboards.join("alerts.yml")),
        tmp.path(),
        "promtool check rules dashboards/alerts.yml",
    )?;
    run_checked(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(dashboards.join("prometheus.yml")),
        tmp.path(),
        "promtool check config dashboards/prometheus.yml",
    )?;

    // A broker, and traffic through the CLI.
    let data_dir = tmp.path().join("data");
    let broker_log = tmp.path().join("broker.log");
    let mut broker = Guard::spawn(
        "broker",
        Command::new(&quiver)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(&data_dir)
            // Secured as a production broker would be, so the security panels and
            // alerts have data: clients authenticate with certificates, and the ACLs
            // decide (the operator is the super user).
            .env("QUIVER_AUTHENTICATION", "mtls")
            .env("QUIVER_AUTHORIZATION", "acl")
            .env("QUIVER_SUPER_USERS", "User:operator"),
        &broker_log,
    )?;
    let addrs = broker_addresses(&mut broker, &broker_log)?;
    let certs = tmp.path().join("certs");
    let anonymous = Cli {
        bin: quiver.clone(),
        broker: addrs.quic,
        ca_cert: addrs.ca_cert.clone(),
        dir: tmp.path().to_path_buf(),
        identity: Vec::new(),
    };
    let client_of = |name: &str| -> anyhow::Result<Cli> {
        let certs = certs.display().to_string();
        let data = data_dir.display().to_string();
        run_checked(
            Command::new(&quiver).args([
                "cert",
                "issue",
                name,
                "--data-dir",
                &data,
                "--out",
                &certs,
            ]),
            tmp.path(),
            "quiver cert issue",
        )?;
        let mut cli = Cli {
            ..anonymous.clone()
        };
        cli.identity = vec![
            "--client-cert".into(),
            format!("{certs}/{name}.pem"),
            "--client-key".into(),
            format!("{certs}/{name}.key"),
        ];
        Ok(cli)
    };
    let cli = client_of("operator")?;
    let intruder = client_of("intruder")?;
    // A client without a certificate (an authentication failure) and one whose
    // principal has no rule (an authorisation denial).
    ensure!(
        !anonymous.run(&["topic", "list"], None)?.status.success(),
        "a client without a certificate was served"
    );
    ensure!(
        !intruder
            .run(&["topic", "create", "intruded"], None)?
            .status
            .success(),
        "a principal without rules created a topic"
    );
    cli.ok(&["topic", "create", TOPIC, "--partitions", "2"], None)?;
    install_plugins(&cli)?;
    produce_and_consume(&cli)?;
    // Failing requests, so that error counters exist: a metadata lookup of a missing
    // topic (UNKNOWN_TOPIC) and a second create (TOPIC_ALREADY_EXISTS).
    let missing = cli.run(&["produce", "no-such-topic"], Some(b"x\n"))?;
    ensure!(
        !missing.status.success(),
        "producing to a missing topic succeeded:\n{}",
        missing.stderr
    );
    let again = cli.run(&["topic", "create", TOPIC, "--partitions", "2"], None)?;
    ensure!(
        !again.status.success(),
        "creating `{TOPIC}` twice succeeded:\n{}",
        again.stderr
    );

    // Prometheus with the shipped scrape config, pointed at this broker and scraping fast.
    let config_path = tmp.path().join("prometheus.yml");
    let config = test_prometheus_config(
        &std::fs::read_to_string(dashboards.join("prometheus.yml"))?,
        &dashboards.join("alerts.yml"),
        addrs.admin,
    )?;
    std::fs::write(&config_path, config)?;
    run_checked(
        Command::new(&promtool)
            .arg("check")
            .arg("config")
            .arg(&config_path),
        tmp.path(),
        "promtool check config (the test's config)",
    )?;
    let prometheus_addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let prometheus_log = tmp.path().join("prometheus.log");
    let mut prometheus = Guard::spawn(
        "prometheus",
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prometheus_addr}")),
        &prometheus_log,
    )?;
    let api = Prometheus {
        addr: prometheus_addr,
    };
    wait_for_target(&api, &mut prometheus, &prometheus_log)?;

    // A second round while Prometheus watches, so rates and latencies have samples.
    produce_and_consume(&cli)?;

    let mut checks = dashboard_checks(&dashboards)?;
    let alerts = alert_checks(&api, &dashboards.join("alerts.yml"))?;
    checks.extend(alerts);
    let failures = api.check_all(&checks, EXPRESSIONS_TIMEOUT);
    if !failures.is_empty() {
        let listed: Vec<String> = failures
            .iter()
            .map(|(check, why)| format!("  {}\n    {}\n    -> {why}", check.origin, check.expr))
            .collect();
        bail!(
            "{} of {} expressions returned no data within {EXPRESSIONS_TIMEOUT:?}:\n{}\nbroker log tail:\n{}",
            failures.len(),
            checks.len(),
            listed.join("\n"),
            tail(&broker_log)
        );
    }

    // The negative control: a metric nobody exports must fail the same check.
    let control = Check {
        origin: "negative control".into(),
        expr: format!(
            "sum by (topic) (rate(quiver_no_such_metric_total{{topic=~\"{TOPIC}\"}}[{RATE_INTERVAL}]))"
        ),
        require_data: true,
    };
    let control_failures = api.check_all(std::slice::from_ref(&control), NEGATIVE_CONTROL_TIMEOUT);
    ensure!(
        control_failures.len() == 1,
        "an expression over a missing metric passed the check: it cannot fail"
    );

    let data_checks = checks.iter().filter(|c| c.require_data).count();
    eprintln!(
        "observability: {} PromQL queries checked ({data_checks} required data), all answered",
        checks.len()
    );
    drop(prometheus);
    drop(broker);
    Ok(())
}

#[test]
fn comparison_is_split_at_top_level_only() {
    assert_eq!(
        left_of_comparison(r#"up{job="quiver"} == 0"#),
        r#"up{job="quiver"}"#
    );
    assert_eq!(
        left_of_comparison(r#"sum by (topic) (x{a!="b", c=~"d"}) > 0"#),
        r#"sum by (topic) (x{a!="b", c=~"d"})"#
    );
    assert_eq!(left_of_comparison("a / b < 0.1"), "a / b");
    assert_eq!(left_of_comparison("a >= 1"), "a");
    assert_eq!(
        left_of_comparison(r#"(a > 1) + b{c="<"}"#),
        r#"(a > 1) + b{c="<"}"#
    );
}

#[test]
fn template_variables_are_substituted_and_unknown_ones_refused() {
    assert_eq!(
        substitute(r#"rate(x{topic=~"$topic"}[$__rate_interval])"#).ok(),
        Some(format!(r#"rate(x{{topic=~"{TOPIC}"}}[{RATE_INTERVAL}])"#))
    );
    assert_eq!(
        substitute("x{topic=~\"${topic:regex}\"}").ok(),
        Some(format!("x{{topic=~\"{TOPIC}\"}}"))
    );
    assert!(substitute("x{instance=~\"$instance\"}").is_err());
}

/// One PromQL query to run and what it must return.
#[derive(Debug, Clone)]
struct Check {
    /// Where the expression comes from, for failure messages.
    origin: String,
    expr: String,
    /// Whether an empty result fails the check (only a successful evaluation otherwise).
    require_data: bool,
}

/// Every PromQL query in the dashboards: panel targets at any depth, and template
/// variable queries.
fn dashboard_checks(dir: &Path) -> anyhow::Result<Vec<Check>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    ensure!(!files.is_empty(), "no dashboards in {}", dir.display());
    let mut checks = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let json: Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
            .with_context(|| format!("{name} is not JSON"))?;
        let before = checks.len();
        collect_exprs(&json, &name, &mut checks)?;
        ensure!(
            checks.len() > before,
            "{name} has no PromQL expression to check"
        );
        let variables = json["templating"]["list"]
            .as_array()
            .with_context(|| format!("{name} has no templating list"))?;
        ensure!(
            variables
                .iter()
                .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
            "{name} has no Prometheus datasource variable"
        );
        for variable in variables.iter().filter(|v| v["type"] == "query") {
            let query = match &variable["query"] {
                Value::String(s) => s.clone(),
                other => other["query"].as_str().unwrap_or_default().to_string(),
            };
            let origin = format!("{name}: variable ${}", variable["name"]);
            checks.push(Check {
                origin,
                expr: variable_query_as_promql(&query)?,
                require_data: true,
            });
        }
    }
    Ok(checks)
}

/// Walks a dashboard's JSON, taking every `expr` string; the nearest `title` names it.
fn collect_exprs(value: &Value, context: &str, out: &mut Vec<Check>) -> anyhow::Result<()> {
    match value {
        Value::Object(map) => {
            let context = match map.get("title").and_then(Value::as_str) {
                Some(title) => format!(
                    "{} / {title}",
                    context.split(" / ").next().unwrap_or_default()
                ),
                None => context.to_string(),
            };
            if let Some(expr) = map.get("expr").and_then(Value::as_str) {
                out.push(Check {
                    origin: context.clone(),
                    expr: substitute(expr).with_context(|| format!("{context}: {expr}"))?,
                    require_data: true,
                });
            }
            for child in map.values() {
                collect_exprs(child, &context, out)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                collect_exprs(item, context, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Grafana's `label_values(metric, label)` as the PromQL query it amounts to.
fn variable_query_as_promql(query: &str) -> anyhow::Result<String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .with_context(|| format!("unsupported variable query `{query}`"))?;
    let (metric, label) = inner
        .rsplit_once(',')
        .with_context(|| format!("label_values without a metric: `{query}`"))?;
    Ok(format!("count by ({}) ({})", label.trim(), metric.trim()))
}

/// Replaces the Grafana template variables the dashboards use; any other is an error.
fn substitute(expr: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .with_context(|| format!("unclosed ${{ in `{expr}`"))?;
            let name = braced[..end].split(':').next().unwrap_or_default();
            (name, end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = match name {
            "topic" => TOPIC,
            "__rate_interval" => RATE_INTERVAL,
            "__interval" => "15s",
            "__interval_ms" => "15000",
            "__range" => "5m",
            "__range_s" => "300",
            other => bail!("unknown template variable `${other}` in `{expr}`"),
        };
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The alert rules as Prometheus loaded them: each full expression must evaluate, and
/// the left of its comparison must return data. Also checks that Prometheus loaded as
/// many rules as the file declares, each with a summary and a description.
fn alert_checks(api: &Prometheus, rules_file: &Path) -> anyhow::Result<Vec<Check>> {
    let declared = std::fs::read_to_string(rules_file)?
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    let rules = api.get("/api/v1/rules?type=alert")?;
    let mut checks = Vec::new();
    let groups = rules["data"]["groups"]
        .as_array()
        .with_context(|| format!("unexpected /api/v1/rules answer: {rules}"))?;
    for rule in groups
        .iter()
        .filter_map(|g| g["rules"].as_array())
        .flatten()
    {
        let name = rule["name"].as_str().unwrap_or_default();
        let query = rule["query"]
            .as_str()
            .with_context(|| format!("alert {name} has no query"))?;
        for key in ["summary", "description"] {
            ensure!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "alert {name} has no {key} annotation"
            );
        }
        checks.push(Check {
            origin: format!("alerts.yml: {name}"),
            expr: query.to_string(),
            require_data: false,
        });
        let left = left_of_comparison(query);
        checks.push(Check {
            origin: format!("alerts.yml: {name} (left of its comparison)"),
            expr: left.to_string(),
            require_data: true,
        });
    }
    let loaded = checks.len() / 2;
    ensure!(
        declared > 0 && loaded == declared,
        "{} declares {declared} alerts, Prometheus loaded {loaded}",
        rules_file.display()
    );
    Ok(checks)
}

/// The part of `expr` before its first comparison operator outside parentheses,
/// brackets, braces and strings; the whole expression when it has none.
fn left_of_comparison(expr: &str) -> &str {
    let bytes = expr.as_bytes();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
        } else {
            match b {
                b'"' | b'\'' | b'`' => quote = Some(b),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b'>' | b'<' if depth == 0 => return expr[..i].trim(),
                b'=' | b'!' if depth == 0 && bytes.get(i + 1) == Some(&b'=') => {
                    return expr[..i].trim();
                }
                _ => {}
            }
        }
        i += 1;
    }
    expr.trim()
}

/// Rewrites the shipped scrape config for the test: this broker's admin address, a
/// one-second scrape and evaluation interval, and the rule file by absolute path.
fn test_prometheus_config(
    shipped: &str,
    rules_file: &Path,
    admin: SocketAddr,
) -> anyhow::Result<String> {
    let replacements = [
        ("127.0.0.1:7421", admin.to_string()),
        (
            "scrape_interval: 15s",
            format!("scrape_interval: {SCRAPE_INTERVAL}"),
        ),
        (
            "evaluation_interval: 15s",
            format!("evaluation_interval: {SCRAPE_INTERVAL}"),
        ),
        ("- alerts.yml", format!("- {}", rules_file.display())),
    ];
    let mut config = shipped.to_string();
    for (from, to) in replacements {
        ensure!(
            config.matches(from).count() == 1,
            "dashboards/prometheus.yml should contain `{from}` once; the test rewrites it"
        );
        config = config.replace(from, &to);
    }
    Ok(config)
}

/// A minimal client for Prometheus' HTTP API: HTTP/1.0, so the body ends at close.
struct Prometheus {
    addr: SocketAddr,
}

impl Prometheus {
    fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = http(self.addr, "GET", path, None)?;
        ensure!(status == 200, "GET {path}: HTTP {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    }

    /// Runs one instant query; `Ok(true)` when it returned at least one sample.
    fn query(&self, expr: &str) -> anyhow::Result<bool> {
        let form = format!("query={}", percent_encode(expr));
        let (status, body) = http(self.addr, "POST", "/api/v1/query", Some(&form))?;
        let json: Value =
            serde_json::from_str(&body).with_context(|| format!("HTTP {status}: {body}"))?;
        ensure!(
            json["status"] == "success",
            "HTTP {status}: {} {}",
            json["errorType"],
            json["error"]
        );
        let data = &json["data"];
        Ok(match data["resultType"].as_str() {
            Some("vector" | "matrix") => data["result"].as_array().is_some_and(|r| !r.is_empty()),
            Some("scalar" | "string") => !data["result"].is_null(),
            _ => bail!("unexpected result: {data}"),
        })
    }

    /// Polls every check until it passes or `timeout` ends; returns those that never
    /// passed, each with its last reason.
    fn check_all(&self, checks: &[Check], timeout: Duration) -> Vec<(Check, String)> {
        let deadline = Instant::now() + timeout;
        let mut pending: Vec<(Check, String)> = checks
            .iter()
            .map(|c| (c.clone(), "not queried".to_string()))
            .collect();
        loop {
            pending.retain_mut(|(check, why)| match self.query(&check.expr) {
                Ok(has_data) if has_data || !check.require_data => false,
                Ok(_) => {
                    *why = "empty result".into();
                    true
                }
                Err(err) => {
                    *why = format!("{err:#}");
                    true
                }
            });
            if pending.is_empty() || Instant::now() >= deadline {
                return pending;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

fn wait_for_target(api: &Prometheus, prometheus: &mut Guard, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + PROMETHEUS_READY_TIMEOUT;
    while !matches!(http(api.addr, "GET", "/-/ready", None), Ok((200, _))) {
        prometheus.ensure_running(log)?;
        ensure!(
            Instant::now() < deadline,
            "prometheus not ready within {PROMETHEUS_READY_TIMEOUT:?}:\n{}",
            tail(log)
        );
        std::thread::sleep(POLL_INTERVAL);
    }
    let deadline = Instant::now() + TARGET_UP_TIMEOUT;
    loop {
        let answer = api.get(&format!(
            "/api/v1/query?query={}",
            percent_encode(r#"up{job="quiver"}"#)
        ))?;
        if answer["data"]["result"][0]["value"][1] == "1" {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the broker's target was not up within {TARGET_UP_TIMEOUT:?}: {answer}\n{}",
            tail(log)
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    form: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let body = form.unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if form.is_some() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream
        .take(HTTP_RESPONSE_BYTES_MAX)
        .read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP head in {response:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A child process killed (by its own PID) and reaped when the guard drops, so a failing
/// test leaves nothing running.
struct Guard {
    name: &'static str,
    child: Child,
}

impl Guard {
    fn spawn(name: &'static str, command: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = File::create(log)?;
        let child = without_quiver_env(command)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self { name, child })
    }

    fn ensure_running(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, tail(log));
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `QUIVER_*` variables override flags; the test's children get only their flags.
fn without_quiver_env(command: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("QUIVER_") {
            command.env_remove(key);
        }
    }
    command
}

struct BrokerAddresses {
    quic: SocketAddr,
    admin: SocketAddr,
    ca_cert: PathBuf,
}

/// Reads the addresses from the broker's startup line:
/// `quiver broker listening on ADDR (QUIC), admin on http://ADDR; CA certificate: PATH`.
fn broker_addresses(broker: &mut Guard, log: &Path) -> anyhow::Result<BrokerAddresses> {
    let deadline = Instant::now() + BROKER_START_TIMEOUT;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        // Only a whole line: the broker may be halfway through writing it.
        let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
        if let Some(line) = whole
            .lines()
            .find(|l| l.contains("quiver broker listening on "))
        {
            let field = |start: &str, end: &str| -> anyhow::Result<String> {
                let from = line
                    .split_once(start)
                    .with_context(|| format!("no `{start}` in {line:?}"))?
                    .1;
                Ok(from
                    .split(end)
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string())
            };
            return Ok(BrokerAddresses {
                quic: field("listening on ", " (QUIC)")?.parse()?,
                admin: field("admin on http://", ";")?.parse()?,
                ca_cert: PathBuf::from(field("CA certificate: ", "\n")?),
            });
        }
        broker.ensure_running(log)?;
        ensure!(
            Instant::now() < deadline,
            "the broker did not report its addresses within {BROKER_START_TIMEOUT:?}:\n{}",
            tail(log)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `quiver` CLI as a client of the test's broker.
#[derive(Clone)]
struct Cli {
    bin: PathBuf,
    broker: SocketAddr,
    ca_cert: PathBuf,
    dir: PathBuf,
    /// `--client-cert`/`--client-key`, or nothing for an anonymous client.
    identity: Vec<String>,
}

struct CliOutput {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<CliOutput> {
        let stdout_path = self.dir.join("cli.out");
        let stderr_path = self.dir.join("cli.err");
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .arg("--broker")
            .arg(self.broker.to_string())
            .arg("--ca-cert")
            .arg(&self.ca_cert)
            .args(&self.identity)
            .current_dir(&self.dir)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(File::create(&stdout_path)?)
            .stderr(File::create(&stderr_path)?);
        let mut child = without_quiver_env(&mut command)
            .spawn()
            .with_context(|| format!("cannot run quiver {args:?}"))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input)?;
        }
        let deadline = Instant::now() + CLI_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("quiver {args:?} did not finish within {CLI_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Ok(CliOutput {
            status,
            stdout: std::fs::read_to_string(stdout_path)?,
            stderr: std::fs::read_to_string(stderr_path)?,
        })
    }

    fn ok(&self, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<CliOutput> {
        let output = self.run(args, stdin)?;
        ensure!(
            output.status.success(),
            "quiver {args:?} failed ({}):\n{}",
            output.status,
            output.stderr
        );
        Ok(output)
    }
}

/// Uploads [`KEEP_PLUGIN`] and [`TRAP_PLUGIN`] and attaches them: the first at the fetch
/// stage of [`TOPIC`], the second at the produce stage of [`SKIP_TOPIC`] (skip) and of
/// [`DLQ_TOPIC`] (dead-letter to [`DEAD_TOPIC`]).
fn install_plugins(cli: &Cli) -> anyhow::Result<()> {
    for topic in [SKIP_TOPIC, DLQ_TOPIC, DEAD_TOPIC] {
        cli.ok(&["topic", "create", topic, "--partitions", "1"], None)?;
    }
    let keep_all = quiver_tests::wat::filter_filling(0xff);
    for (name, filter) in [
        (KEEP_PLUGIN, keep_all.as_str()),
        (TRAP_PLUGIN, quiver_tests::wat::TRAP_FILTER),
    ] {
        let file = cli.dir.join(format!("{name}.wat"));
        std::fs::write(&file, quiver_tests::wat::module(filter))?;
        let file = file.to_str().context("temporary path is UTF-8")?;
        cli.ok(&["plugin", "upload", name, file], None)?;
    }
    cli.ok(
        &["plugin", "attach", TOPIC, KEEP_PLUGIN, "--stage", "fetch"],
        None,
    )?;
    cli.ok(
        &[
            "plugin",
            "attach",
            SKIP_TOPIC,
            TRAP_PLUGIN,
            "--stage",
            "produce",
            "--on-error",
            "skip",
        ],
        None,
    )?;
    let dead_letter = format!("dead-letter:{DEAD_TOPIC}");
    cli.ok(
        &[
            "plugin",
            "attach",
            DLQ_TOPIC,
            TRAP_PLUGIN,
            "--stage",
            "produce",
            "--on-error",
            &dead_letter,
        ],
        None,
    )?;
    Ok(())
}

/// Produces [`RECORDS`] records, then reads [`RECORDS`] back from the beginning (the
/// first round's, once the topic holds more), through [`KEEP_PLUGIN`]. Then makes
/// [`TRAP_PLUGIN`] fail once at each policy: a produce it skips, a produce it
/// dead-letters, and a consumer's fetch that must fail.
fn produce_and_consume(cli: &Cli) -> anyhow::Result<()> {
    let input: String = (1..=RECORDS).map(|i| format!("{i}\n")).collect();
    cli.ok(&["produce", TOPIC], Some(input.as_bytes()))?;
    let count = RECORDS.to_string();
    let consumed = cli.ok(
        // In a group, so the consumer group lag and member series exist.
        &[
            "consume",
            TOPIC,
            "--group",
            "observed-group",
            "--from-beginning",
            "--count",
            &count,
        ],
        None,
    )?;
    let lines = consumed.stdout.lines().count();
    ensure!(
        lines == RECORDS,
        "consumed {lines} records, expected {RECORDS}"
    );
    // The trap's produce-stage policies answer the producer with success.
    cli.ok(&["produce", SKIP_TOPIC], Some(b"skipped\n"))?;
    cli.ok(&["produce", DLQ_TOPIC], Some(b"dead-lettered\n"))?;
    // A plugin a consumer names fails its fetch with on_error = fail.
    let trapped = cli.run(
        &[
            "consume",
            TOPIC,
            "--partition",
            "0",
            "--from-beginning",
            "--plugin",
            TRAP_PLUGIN,
            "--count",
            "1",
            // Only a bound: the trap answers at once, and a slow answer must not pass
            // for a quiet topic.
            "--timeout",
            "30000",
        ],
        None,
    )?;
    ensure!(
        !trapped.status.success(),
        "consuming through the trapping plugin succeeded:\n{}",
        trapped.stdout
    );
    ensure!(
        trapped.stderr.contains("PLUGIN_FAILED") && trapped.stderr.contains("trapped"),
        "consuming through the trapping plugin failed for another reason:\n{}",
        trapped.stderr
    );
    Ok(())
}

fn run_checked(command: &mut Command, dir: &Path, what: &str) -> anyhow::Result<()> {
    let output = command
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// A tool from PATH; the test fails rather than skips without it.
fn tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!("`{name}` is not on PATH: install Debian's `prometheus` (scripts/test.sh does)")
        })
}

/// `QUIVER_BIN`, or the `quiver` binary next to the test binary's directory.
fn quiver_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("QUIVER_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no grandparent directory")?
        .join("quiver");
    ensure!(
        bin.is_file(),
        "{} not found: run `cargo build --bin quiver` first or set QUIVER_BIN",
        bin.display()
    );
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The last lines of a log, for failure messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
