//! Observability, proven against a real Prometheus: the api, broadcaster and worker run as
//! processes, Prometheus scrapes them with Kubernetes-like labels while traffic flows, and then
//! every Grafana panel query in `charts/courier/dashboards/` must return data and every alert
//! expression in `charts/courier/rules/` must evaluate (plus `promtool check rules` and the
//! alert unit tests). A second test follows one trace id from the HTTP request through NATS to
//! the broadcaster's and the worker's logs and into both events.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use courier_core::{
    ClientFrame, Priority, ServerFrame,
    collection_spec::{TaskTrigger, TriggerOn, WebhookTarget},
};
use courier_tests::{
    NatsServer, StoreServer, TEST_JWT_SECRET, WsClient,
    chaos::{api_process, broadcaster_process, fresh_database, worker_process},
    init_test_logging,
    priorities::collections_with,
    prometheus::{PrometheusServer, ScrapeTarget},
    services::{ServiceProcess, access_token, product},
    wait_for, wait_until,
    webhooks::{TEST_WEBHOOK_SECRET, WebhookReceiver},
    workspace_root,
};
use serde_json::{Value, json};

/// Grafana's variables as a user choosing "All" pods in the local namespace would have them.
const NAMESPACE: &str = "local";
const RATE_INTERVAL: &str = "30s";

struct Deployment {
    _nats: NatsServer,
    _store: StoreServer,
    /// Receives the `products.notify` webhooks (the webhook panels and alert need their metrics).
    _receiver: WebhookReceiver,
    _collections: tempfile::TempPath,
    api: ServiceProcess,
    broadcaster: ServiceProcess,
    worker: ServiceProcess,
    http: reqwest::Client,
}

impl Deployment {
    async fn start() -> Self {
        let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
        let database = fresh_database();
        // The shipped collections, plus a webhook on every product change (steady traffic).
        let receiver = WebhookReceiver::start(&[TEST_WEBHOOK_SECRET]).await;
        let secret_file = receiver.secret_file(&[TEST_WEBHOOK_SECRET]);
        let collections_file = collections_with(|file| {
            let products =
                file.collections.iter_mut().find(|c| c.name == "products").expect("products");
            products.tasks.push(TaskTrigger {
                kind: "products.notify".into(),
                on: vec![TriggerOn::Create, TriggerOn::Update, TriggerOn::Delete],
                priority: Priority::Normal,
                delay: None,
                webhook: Some(WebhookTarget {
                    url: receiver.url(),
                    secret_file: secret_file.display().to_string(),
                    timeout: None,
                }),
                external: false,
            });
        });
        let collections = collections_file.display().to_string();
        let api = api_process(
            &store,
            &database,
            &nats,
            &[
                ("COURIER_JETSTREAM_METRICS_INTERVAL", "500".to_owned()),
                ("COURIER_COLLECTIONS_FILE", collections.clone()),
            ],
        )
        .await;
        let broadcaster = broadcaster_process(
            &nats.url(),
            &[
                ("COURIER_COLLECTIONS_FILE", collections.clone()),
                ("COURIER_JWT_SECRET", TEST_JWT_SECRET.to_owned()),
                ("COURIER_LOG", "info,courier_broadcaster=debug".to_owned()),
            ],
        )
        .await;
        let worker = worker_process(
            &store,
            &database,
            &nats,
            "worker-0",
            &[
                ("COURIER_LOG_FORMAT", "json".to_owned()),
                ("COURIER_COLLECTIONS_FILE", collections),
                ("COURIER_WEBHOOK_ALLOWED_URLS", format!("http://127.0.0.1:{}/", receiver.port)),
                ("COURIER_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true".to_owned()),
            ],
        )
        .await;
        Deployment {
            _nats: nats,
            _store: store,
            _receiver: receiver,
            _collections: collections_file,
            api,
            broadcaster,
            worker,
            http: reqwest::Client::new(),
        }
    }

    async fn token(&self) -> String {
        self.token_of("grafana-fan").await
    }

    async fn token_of(&self, username: &str) -> String {
        access_token(&self.http, &self.api.http_url(""), username).await
    }

    async fn post(
        &self,
        collection: &str,
        body: &Value,
        token: Option<&str>,
        trace_id: Option<&str>,
    ) -> reqwest::Response {
        let mut request =
            self.http.post(self.api.http_url(&format!("/api/v1/{collection}"))).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(trace_id) = trace_id {
            request = request.header("x-trace-id", trace_id);
        }
        request.send().await.expect("api answers")
    }
}

fn pet(n: usize) -> Value {
    let species = ["Dog", "Cat", "Rabbit"][n % 3];
    json!({"name": format!("Pet {n}"), "species": species, "age": n % 15, "owner": "grafana-fan", "vaccinated": n.is_multiple_of(2)})
}

/// A mix a real deployment sees: creates, updates, deletes, bad input, pets for the workers,
/// subscribers on collection and document channels, a resuming client, a client that leaves.
async fn varied_traffic(d: &Deployment, token: &str) {
    let ws = d.broadcaster.ws_url();
    for n in 0..5 {
        assert_eq!(d.post("products", &product(n), None, None).await.status(), 201);
    }
    // A client resuming from the start: its subscribe is served with a replay.
    let mut leaving = WsClient::connect(&ws).await.expect("ws");
    leaving.subscribe("products", Some(0), None).await.expect("replaying subscribe");
    let desk: Value = d
        .post("desks", &json!({"name": "Standing", "width": 120, "height": 75}), None, None)
        .await
        .json()
        .await
        .expect("desk");
    let desk_url = d.api.http_url(&format!("/api/v1/desks/{}", desk["id"].as_str().expect("id")));
    let mut document = WsClient::connect(&ws).await.expect("ws");
    document
        .subscribe(&format!("desks:{}", desk["id"].as_str().unwrap()), None, None)
        .await
        .expect("document subscribe");
    let patched = d
        .http
        .patch(&desk_url)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"height": 110}"#)
        .send()
        .await;
    assert_eq!(patched.expect("patch").status(), 200);
    assert_eq!(d.http.delete(&desk_url).send().await.expect("delete").status(), 204);
    // Client errors, each counted under its route template and status.
    assert_eq!(d.post("products", &json!({"nombre": 5}), None, None).await.status(), 422);
    assert_eq!(d.post("nothing-here", &json!({}), None, None).await.status(), 404);
    assert_eq!(d.post("pets", &pet(0), None, None).await.status(), 401);
    for n in 0..3 {
        assert_eq!(d.post("pets", &pet(n), Some(token), None).await.status(), 201);
    }
    leaving.close().await;
    document.close().await;
    chat_traffic(d).await;
}

/// The api's chat endpoints as `token`'s user: `method path` with an optional body; the answer.
async fn chat_call(
    http: &reqwest::Client,
    api: &str,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (reqwest::StatusCode, Value) {
    let mut request = http.request(method, format!("{api}/api/v1/chats{path}")).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("api answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a room owned by `token`'s user with `members`; its id.
async fn create_room(http: &reqwest::Client, api: &str, token: &str, members: &[&str]) -> String {
    let body = json!({"name": "ops", "members": members});
    let (status, room) = chat_call(http, api, token, reqwest::Method::POST, "", Some(body)).await;
    assert_eq!(status, 201, "{room}");
    room["id"].as_str().expect("room id").to_owned()
}

/// A chat room's life through the api: members join (one from the membership cache), an
/// outsider is refused, typing (past the rate limit), a presence query, a member removed and
/// cut off.
async fn chat_traffic(d: &Deployment) {
    let (ws, api) = (d.broadcaster.ws_url(), d.api.http_url(""));
    let (ana, bob, eve) = tokio::join!(d.token_of("ana"), d.token_of("bob"), d.token_of("eve"));
    let room = create_room(&d.http, &api, &ana, &["bob"]).await;
    let channel = format!("chat:{room}");
    let mut ana_ws = WsClient::connect(&ws).await.expect("ws");
    ana_ws.subscribe(&channel, None, Some(ana.clone())).await.expect("ana joins");
    let mut ana_tab = WsClient::connect(&ws).await.expect("ws");
    ana_tab.subscribe(&channel, None, Some(ana.clone())).await.expect("from the cache");
    let mut bob_ws = WsClient::connect(&ws).await.expect("ws");
    bob_ws.subscribe(&channel, None, Some(bob.clone())).await.expect("bob joins");
    let mut eve_ws = WsClient::connect(&ws).await.expect("ws");
    assert!(eve_ws.subscribe(&channel, None, Some(eve.clone())).await.is_err());
    for _ in 0..6 {
        ana_ws.send(&ClientFrame::Typing { channel: channel.clone() }).await.expect("typing");
    }
    ana_ws.send(&ClientFrame::Presence { channel: channel.clone() }).await.expect("presence");
    let path = format!("/{room}/members/bob");
    let (status, body) = chat_call(&d.http, &api, &ana, reqwest::Method::DELETE, &path, None).await;
    assert!(status.is_success(), "remove bob: {status} {body}");
    loop {
        match bob_ws.next_frame_within(Duration::from_secs(10)).await.expect("bob is cut off") {
            ServerFrame::Unsubscribed { reason: Some(_), .. } => break,
            _ => continue,
        }
    }
    for client in [ana_ws, ana_tab, bob_ws, eve_ws] {
        client.close().await;
    }
}

/// A web app page's telemetry report: api calls (one failing), a WebSocket outage, an error.
fn web_report(n: usize) -> Value {
    json!({
        "api": [
            {"route": "/api/v1/products", "method": "GET", "status": 200, "durations_ms": [12.5, 40.0 + n as f64 % 50.0]},
            {"route": "/api/v1/pets/65f0c0ffee0123456789abcd", "method": "GET", "status": 503, "durations_ms": [900]},
            {"route": "/api/v1/collections", "method": "GET", "status": 0, "durations_ms": [3000]}
        ],
        "ws": {"connects": 1, "failures": 2, "reconnects": 1, "unrecovered_resumes": n % 2, "disconnected_ms": 2500},
        "errors": [{"kind": "type_error", "count": 1}]
    })
}

/// Keeps products and pets flowing, and a subscriber reading them, until `stop`.
fn steady_traffic(
    d: &Deployment,
    token: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    let (http, api, ws) = (d.http.clone(), d.api.http_url(""), d.broadcaster.ws_url());
    tokio::spawn(async move {
        let (reader_token, writer_token) =
            tokio::join!(access_token(&http, &api, "reader"), access_token(&http, &api, "writer"));
        let mut subscriber = WsClient::connect(&ws).await.expect("ws");
        subscriber.subscribe("products", None, None).await.expect("subscribe");
        let reader = tokio::spawn(async move { while subscriber.next_frame().await.is_ok() {} });
        // A chat member reading the room a colleague writes to.
        let room = create_room(&http, &api, &writer_token, &["reader"]).await;
        let mut member = WsClient::connect(&ws).await.expect("ws");
        member
            .subscribe(&format!("chat:{room}"), None, Some(reader_token))
            .await
            .expect("chat subscribe");
        let chat_reader = tokio::spawn(async move { while member.next_frame().await.is_ok() {} });
        let mut n = 0;
        // Pacing (a few writes a second), not synchronisation.
        let mut pace = tokio::time::interval(Duration::from_millis(150));
        pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Acquire) {
            pace.tick().await;
            n += 1;
            let _ =
                http.post(format!("{api}/api/v1/products")).json(&product(1000 + n)).send().await;
            if n % 4 == 0 {
                let _ = http
                    .post(format!("{api}/api/v1/pets"))
                    .bearer_auth(&token)
                    .json(&pet(n))
                    .send()
                    .await;
            }
            // What pages report from the browser (every ~4 s: within the per-address limit).
            if n % 27 == 1 {
                let _ = http
                    .post(format!("{api}/api/v1/telemetry/web"))
                    .json(&web_report(n))
                    .send()
                    .await;
            }
            let message = json!({"text": format!("message {n}")});
            let path = format!("/{room}/messages");
            let _ =
                chat_call(&http, &api, &writer_token, reqwest::Method::POST, &path, Some(message))
                    .await;
        }
        reader.abort();
        chat_reader.abort();
        n
    })
}

/// Every `courier_*` metric name an expression mentions.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("courier_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The dashboards the chart ships: (file name, JSON).
fn dashboards() -> Vec<(String, Value)> {
    let dir = workspace_root().join("charts/courier/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("charts/courier/dashboards")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("dashboard file");
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()));
            (path.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect()
}

/// A panel query as Grafana sends it with "All" pods of the local namespace selected.
fn as_grafana_sends_it(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$namespace", NAMESPACE)
        .replace("$pod", ".*")
}

/// Checks what Grafana needs of each dashboard and panel; returns every panel query.
fn check_dashboard_shape(
    file: &str,
    dashboard: &Value,
    problems: &mut Vec<String>,
) -> Vec<(String, String)> {
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for needed in ["datasource", "namespace", "pod"] {
        if !variables.contains(&needed) {
            problems.push(format!("{file}: no '{needed}' variable"));
        }
    }
    if dashboard["uid"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{file}: no uid"));
    }
    let mut queries = Vec::new();
    let mut titles = BTreeSet::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten().filter(|p| p["type"] != "row")
    {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        if !titles.insert(title.clone()) {
            problems.push(format!("{file}: two panels titled '{title}'"));
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems
                .push(format!("{file} / {title}: datasource is not the ${{datasource}} variable"));
        }
        if panel["fieldConfig"]["defaults"]["unit"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{file} / {title}: no unit"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{file} / {title}: no queries"));
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if !expr.contains("$namespace") || !expr.contains("$pod") {
                problems.push(format!(
                    "{file} / {title}: query not scoped to $namespace and $pod: {expr}"
                ));
            }
            queries.push((format!("{file} / {title}"), expr.to_owned()));
        }
    }
    queries
}

fn alert_rules() -> Vec<(String, String)> {
    let path = workspace_root().join("charts/courier/rules/courier-alerts.yaml");
    let rules: Value = yaml_serde::from_str(&std::fs::read_to_string(&path).expect("alert rules"))
        .expect("rules YAML");
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .map(|rule| {
            (
                rule["alert"].as_str().unwrap_or("?").to_owned(),
                rule["expr"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn run_tool(program: &Path, args: &[&str], dir: &Path) -> (bool, String) {
    let output = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("tool runs");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_panel_and_alert_works_against_a_real_prometheus() {
    init_test_logging();
    let root = workspace_root();

    // The committed dashboards are what their generator writes.
    let (fresh, out) = run_tool(
        Path::new("python3"),
        &["charts/courier/dashboards/generate.py", "--check"],
        &root,
    );
    assert!(fresh, "dashboards are stale: {out}");
    // The rules are valid and their unit tests pass.
    let promtool = courier_tests::process::find_tool("promtool", "COURIER_PROMTOOL_BIN");
    let (valid, out) =
        run_tool(&promtool, &["check", "rules", "charts/courier/rules/courier-alerts.yaml"], &root);
    assert!(valid, "promtool check rules:\n{out}");
    let (passed, out) = run_tool(
        &promtool,
        &["test", "rules", "alerts.test.yaml"],
        &root.join("tests/observability"),
    );
    assert!(passed, "promtool test rules:\n{out}");

    let d = Deployment::start().await;
    let targets: Vec<ScrapeTarget> =
        [(&d.api, "api-0"), (&d.broadcaster, "broadcaster-0"), (&d.worker, "worker-0")]
            .into_iter()
            .map(|(process, pod)| ScrapeTarget {
                address: format!("127.0.0.1:{}", process.port),
                namespace: NAMESPACE.into(),
                pod: pod.into(),
            })
            .collect();
    let prometheus =
        PrometheusServer::start(&targets, &[root.join("charts/courier/rules/courier-alerts.yaml")])
            .await;

    let token = d.token().await;
    let stop = Arc::new(AtomicBool::new(false));
    let steady = steady_traffic(&d, token.clone(), stop.clone());
    varied_traffic(&d, &token).await;
    // Data for every panel: all targets up, pets enriched, deliveries measured, a replay served.
    let readiness = [
        ("sum(up)", 3.0),
        (r#"sum(courier_tasks_processed_total{kind="pets.enrich"})"#, 3.0),
        ("sum(rate(courier_ws_delivery_lag_seconds_count[10s]))", f64::MIN_POSITIVE),
        ("sum(courier_ws_replays_total)", 1.0),
        ("sum(rate(courier_chat_delivery_lag_seconds_count[10s]))", f64::MIN_POSITIVE),
        ("sum(courier_chat_revocations_total)", 1.0),
        (
            r#"sum(rate(courier_webhook_deliveries_total{outcome="delivered"}[10s]))"#,
            f64::MIN_POSITIVE,
        ),
    ];
    wait_for("Prometheus to see the traffic", Duration::from_secs(60), || async {
        let mut seen = Vec::new();
        for (expr, at_least) in readiness {
            let value = prometheus.values(expr).await.ok().and_then(|v| v.first().copied());
            seen.push((expr, value, value.is_some_and(|v| v >= at_least)));
        }
        if seen.iter().all(|(_, _, ok)| *ok) {
            Ok(())
        } else {
            Err(format!("{seen:?}\n{}", prometheus.log_text()))
        }
    })
    .await;

    // What the files say, checked once; then what Prometheus answers, checked until every panel
    // has data and every rule was evaluated (rates need two scrapes after the traffic).
    let mut problems = Vec::new();
    let mut panels = Vec::new();
    for (file, dashboard) in dashboards() {
        panels.extend(check_dashboard_shape(&file, &dashboard, &mut problems));
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    let rules = alert_rules();
    let known = wait_for(
        "every panel query, alert rule and metric to work against Prometheus",
        Duration::from_secs(30),
        || async {
            let (known, problems) = prometheus_problems(&prometheus, &panels, &rules).await;
            if problems.is_empty() {
                Ok(known)
            } else {
                Err(format!("{} problem(s):\n{}", problems.len(), problems.join("\n")))
            }
        },
    )
    .await;
    stop.store(true, Ordering::Release);
    let steady_posts = steady.await.expect("steady traffic");

    eprintln!(
        "observability proof: {} dashboards, {} panel queries, {} alert rules, {} courier metrics in Prometheus, \
         {steady_posts} background posts",
        dashboards().len(),
        panels.len(),
        rules.len(),
        known.iter().filter(|n| n.starts_with("courier_")).count(),
    );
    assert!(
        panels.len() >= 70,
        "expected the five dashboards' panels, found {} queries",
        panels.len()
    );
}

/// What Prometheus says about the dashboards' `panels` (name, query) and the alert `rules`:
/// the metric names it knows, and every problem (an unknown metric, a failing or empty query, a
/// rule not evaluated cleanly).
async fn prometheus_problems(
    prometheus: &PrometheusServer,
    panels: &[(String, String)],
    rules: &[(String, String)],
) -> (BTreeSet<String>, Vec<String>) {
    let mut problems = Vec::new();
    let known: BTreeSet<String> = match prometheus.api("label/__name__/values", &[]).await {
        Ok(names) => names
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Err(err) => {
            problems.push(format!("metric names: {err}"));
            BTreeSet::new()
        }
    };
    for (panel, expr) in panels {
        for name in metric_names(expr).difference(&known) {
            problems.push(format!("{panel}: metric {name} does not exist"));
        }
        let query = as_grafana_sends_it(expr);
        match prometheus.values(&query).await {
            Err(err) => problems.push(format!("{panel}: {err}\n    {query}")),
            Ok(values) if values.is_empty() => {
                problems.push(format!("{panel}: no data\n    {query}"))
            }
            Ok(values) if !values.iter().any(|v| v.is_finite()) => {
                problems.push(format!("{panel}: only NaN/Inf {values:?}\n    {query}"))
            }
            Ok(_) => {}
        }
    }
    for (alert, expr) in rules {
        for name in metric_names(expr).difference(&known) {
            problems.push(format!("alert {alert}: metric {name} does not exist"));
        }
        if let Err(err) = prometheus.query(expr).await {
            problems.push(format!("alert {alert}: {err}\n    {expr}"));
        }
    }
    // Prometheus loaded the same file and evaluates every rule without error.
    match prometheus.api("rules", &[("type", "alert")]).await {
        Ok(loaded) => {
            let evaluated: Vec<(String, String)> = loaded["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .map(|r| {
                    (
                        r["name"].as_str().unwrap_or("?").to_owned(),
                        r["health"].as_str().unwrap_or("?").to_owned(),
                    )
                })
                .collect();
            if evaluated.len() != rules.len() || evaluated.iter().any(|(_, health)| health != "ok")
            {
                problems.push(format!("Prometheus rule health: {evaluated:?}"));
            }
        }
        Err(err) => problems.push(format!("rules api: {err}")),
    }
    (known, problems)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_id_follows_a_request_through_nats_to_the_broadcaster_the_worker_and_both_events() {
    init_test_logging();
    let d = Deployment::start().await;
    let token = d.token().await;
    let mut client = WsClient::connect(&d.broadcaster.ws_url()).await.expect("ws");
    client.subscribe("pets", None, None).await.expect("subscribe");

    let trace_id = format!("trace-{}", uuid::Uuid::now_v7().simple());
    let created = d.post("pets", &pet(7), Some(&token), Some(&trace_id)).await;
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["x-trace-id"], trace_id.as_str(), "the api echoes the trace id");
    // An error answer carries its (generated) trace id too, so a user can quote it.
    let refused = d.post("pets", &pet(8), None, None).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get("x-trace-id").is_some_and(|v| v.len() == 32));

    let mut types = Vec::new();
    while types.len() < 2 {
        if let ServerFrame::Event { event, .. } =
            client.next_frame_within(Duration::from_secs(20)).await.expect("events arrive")
        {
            assert_eq!(
                event.trace_id, trace_id,
                "{} carries the request's trace id",
                event.event_type
            );
            types.push(event.event_type.clone());
        }
    }
    assert_eq!(types, ["pets.created", "pets.enriched"]);

    // Each service's JSON logs name the trace id: the api's request span, the broadcaster's
    // receipt of the event, the worker's task span.
    wait_until("the trace id in every log", Duration::from_secs(10), || async {
        [&d.api, &d.broadcaster, &d.worker].iter().all(|p| p.log_text().contains(&trace_id))
    })
    .await;
    for (name, process) in [("api", &d.api), ("broadcaster", &d.broadcaster), ("worker", &d.worker)]
    {
        let lines: Vec<Value> = process
            .log_text()
            .lines()
            .filter(|line| line.contains(&trace_id))
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|_| panic!("{name} logs JSON lines: {line}"))
            })
            .collect();
        assert!(!lines.is_empty(), "{name} logged the trace id");
    }
}
