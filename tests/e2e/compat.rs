//! The seed systems' own clients against Courier with only the URL switched: Python scripts in
//! `tests/seeds/` written from the seeds' READMEs (websockets + requests, from `.dev/venv`)
//! talk to real api, broadcaster and worker processes with `COURIER_SEED_COMPAT=true`. Then
//! nats-server is killed mid-run: the compat consumer still prints every product it would have.

use std::{path::PathBuf, process::Stdio, time::Duration};

use courier_tests::{
    NatsServer, StoreServer, TEST_JWT_SECRET, chaos, services::ServiceProcess, workspace_root,
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// Longest any one expected line or script may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run `./dev setup` (it installs tools/requirements.txt into .dev/venv)";

fn python() -> PathBuf {
    let python = workspace_root().join(".dev/venv/bin/python");
    assert!(python.is_file(), "{} is missing: {SETUP_HINT}", python.display());
    python
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("tests/seeds").join(name)
}

/// nats-server, the store, and api, broadcaster and worker processes with the seed layer on.
struct SeedStack {
    nats: NatsServer,
    store: StoreServer,
    database: String,
    api: ServiceProcess,
    broadcaster: ServiceProcess,
    _worker: ServiceProcess,
    http: reqwest::Client,
}

impl SeedStack {
    async fn start() -> Self {
        let nats = NatsServer::start().await;
        let store = StoreServer::start().await;
        let database = chaos::fresh_database();
        let on = [("COURIER_SEED_COMPAT", "true".to_owned())];
        let api = chaos::api_process(&store, &database, &nats, &on).await;
        let collections = workspace_root().join("collections.yaml").display().to_string();
        let broadcaster = chaos::broadcaster_process(
            &nats.url(),
            &[
                on[0].clone(),
                ("COURIER_COLLECTIONS_FILE", collections),
                ("COURIER_JWT_SECRET", TEST_JWT_SECRET.to_owned()),
            ],
        )
        .await;
        let worker = chaos::worker_process(&store, &database, &nats, "seed-worker", &[]).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        SeedStack { nats, store, database, api, broadcaster, _worker: worker, http }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api.port)
    }

    /// The seeds' WebSocket URL: the broadcaster's host and port, no path.
    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.broadcaster.port)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.api_url()));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the api answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A seed script running with the stack's URLs; its stdout arrives line by line.
struct Script {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Script {
    fn start(stack: &SeedStack, name: &str, args: &[&str], envs: &[(&str, String)]) -> Self {
        let mut command = Command::new(python());
        command
            .arg(script(name))
            .args(args)
            .env("API_URL", stack.api_url())
            .env("WS_URL", stack.ws_url())
            .env("PYTHONUNBUFFERED", "1")
            .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("python starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Script { child, lines, seen: Vec::new() }
    }

    /// The next line containing `needle` (earlier lines are kept in `seen`).
    async fn expect(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("no line with {needle:?} within {STEP_TIMEOUT:?}; got {:#?}", self.seen)
                })
                .unwrap_or_else(|| {
                    panic!("the script ended before {needle:?}; got {:#?}", self.seen)
                });
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// Waits for the script to exit by itself: its status and every line it printed.
    async fn finish(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = tokio::time::timeout(STEP_TIMEOUT, self.child.wait())
            .await
            .expect("the script finishes in time")
            .expect("waiting for the script");
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(5), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        (status, self.seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_clients_work_unchanged() {
    let _machine = chaos::share_machine().await;
    let stack = SeedStack::start().await;

    // Chapter-CI: the consumer prints what test_api.py auto POSTs.
    let mut consumer = Script::start(&stack, "websocket_client.py", &[], &[]);
    consumer.expect("Connected to WebSocket server").await;
    consumer.expect("pong").await;
    consumer.expect("status:").await;
    let (status, lines) = Script::start(&stack, "test_api.py", &["auto", "3"], &[]).finish().await;
    assert!(status.success(), "test_api.py failed: {lines:#?}");
    let ids: Vec<String> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("201 "))
        .map(|body| serde_json::from_str::<Value>(body).unwrap()["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3, "three products created: {lines:#?}");
    assert!(lines.iter().any(|l| l == "listed 3 products"), "{lines:#?}");
    for id in &ids {
        consumer.expect(&format!("ID: {id}")).await;
    }
    consumer.expect("Price: $").await;
    let (status, product) =
        stack.send(reqwest::Method::GET, &format!("/api/product/{}/", ids[0]), None).await;
    assert_eq!((status, product["nombre"].as_str()), (200, Some("Producto 1")));

    // Desks: created, updated, deleted, in that order (with and without the trailing slash).
    let mut desks = Script::start(&stack, "websocket_consumer.py", &[], &[]);
    desks.expect("Conectado al servidor WebSocket").await;
    let desk = json!({"name": "Mesa Ejecutiva", "width": 180, "height": 90});
    let (status, created) = stack.send(reqwest::Method::POST, "/api/desk/", Some(desk)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, patched) = stack
        .send(reqwest::Method::PATCH, &format!("/api/desk/{id}"), Some(json!({"width": 200})))
        .await;
    assert_eq!((status, patched["width"].as_i64()), (200, Some(200)), "{patched}");
    let (status, _) = stack.send(reqwest::Method::DELETE, &format!("/api/desk/{id}/"), None).await;
    assert_eq!(status, 204);
    desks.expect("Nueva mesa creada: Mesa Ejecutiva (180x90cm)").await;
    desks.expect(&format!("ID: {id}")).await;
    desks.expect("Mesa actualizada: Mesa Ejecutiva (200x90cm)").await;
    desks.expect("Mesa eliminada: Mesa Ejecutiva").await;
    desks.expect(&format!("ID: {id}")).await;

    // Pets: token → create → enrichment → stats, as the README walks through it.
    let password = "correct horse battery";
    let (status, _) = stack
        .send(
            reqwest::Method::POST,
            "/api/v1/auth/register",
            Some(json!({"username": "admin", "password": password})),
        )
        .await;
    assert_eq!(status, 201);
    // The stats (`/api/v1/queues`) are for admins: grant the role the way an operator does,
    // with `courier-api grant-role` against the same store.
    let granted = Command::new(courier_tests::process::courier_binary("courier-api"))
        .args(["grant-role", "--username", "admin", "--role", "admin"])
        .envs(chaos::api_env(&stack.store, &stack.database, &stack.nats))
        .output()
        .await
        .expect("courier-api grant-role runs");
    assert!(granted.status.success(), "grant-role: {}", String::from_utf8_lossy(&granted.stderr));
    assert!(String::from_utf8_lossy(&granted.stdout).contains("'admin' now has the roles: admin"));
    let envs = [("PETS_USERNAME", "admin".to_owned()), ("PETS_PASSWORD", password.to_owned())];
    let (status, lines) = Script::start(&stack, "pets_flow.py", &[], &envs).finish().await;
    assert!(status.success(), "pets_flow.py failed: {lines:#?}");
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has("token ok") && has("refresh ok"), "{lines:#?}");
    assert!(
        has("Pet created successfully") && lines.iter().any(|l| l.contains("task_queued=True")),
        "{lines:#?}"
    );
    assert!(
        has("filtered ") && lines.iter().any(|l| l.ends_with("includes new pet: True")),
        "{lines:#?}"
    );
    assert!(has("enriched: "), "{lines:#?}");
    assert!(has("stats queue_name=tasks pending_tasks="), "{lines:#?}");
    let (status, _) = stack.send(reqwest::Method::GET, "/api/redis/stats/", None).await;
    assert_eq!(status, 401, "the stats need a signed-in admin, like /api/v1/queues");

    // Rxul Chat: a member's room socket at /ws/chats/{chat_id}?token= gets the room's
    // messages; a non-member is refused at the upgrade.
    let api_url = stack.api_url();
    let ana = courier_tests::services::access_token(&stack.http, &api_url, "ana").await;
    let _ben = courier_tests::services::access_token(&stack.http, &api_url, "ben").await;
    let eve = courier_tests::services::access_token(&stack.http, &api_url, "eve").await;
    let room: Value = stack
        .http
        .post(format!("{api_url}/api/v1/chats"))
        .bearer_auth(&ana)
        .json(&json!({"name": "seed room", "members": ["ben"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let room_id = room["id"].as_str().unwrap_or_else(|| panic!("a room: {room}")).to_owned();
    let ws = [("WS_URL", stack.ws_url())];
    let mut member = Script::start(&stack, "chat_client.py", &[&room_id, &ana], &ws);
    member.expect(&format!("joined chat {room_id}")).await;
    let (status, lines) =
        Script::start(&stack, "chat_client.py", &[&room_id, &eve], &ws).finish().await;
    assert!(status.success() && lines.iter().any(|l| l == "refused 403"), "{lines:#?}");
    let sent = stack
        .http
        .post(format!("{api_url}/api/v1/chats/{room_id}/messages"))
        .bearer_auth(&ana)
        .json(&json!({"text": "hola desde la API"}))
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 201);
    member.expect(&format!("💬 {room_id}: hola desde la API")).await;

    // The modern surface is untouched: the web app at `/`, protocol v1 at `/ws`, and OpenAPI
    // lists every alias as deprecated.
    let page = stack.http.get(format!("{}/", stack.api_url())).send().await.unwrap();
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let mut v1 = courier_tests::WsClient::connect(&stack.broadcaster.ws_url()).await.unwrap();
    v1.subscribe("products", None, None).await.unwrap();
    let (_, openapi) = stack.send(reqwest::Method::GET, "/openapi.json", None).await;
    let op = &openapi["paths"]["/api/product/"]["post"];
    assert_eq!(
        (op["deprecated"].as_bool(), op["x-modern-equivalent"].as_str()),
        (Some(true), Some("POST /api/v1/products"))
    );
    assert!(stack.api.log_text().contains("deprecated seed endpoint used"));

    drop(v1);

    // Off means off: an api on the same data without the layer has no seed paths.
    let off = chaos::api_process(&stack.store, &stack.database, &stack.nats, &[]).await;
    let listed = stack.http.get(off.http_url("/api/products/")).send().await.unwrap();
    assert_eq!(listed.status(), 404);
    let modern = stack.http.get(off.http_url("/api/v1/products")).send().await.unwrap();
    assert_eq!(modern.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_consumer_loses_nothing_while_nats_is_down() {
    let _machine = chaos::share_machine().await;
    let mut stack = SeedStack::start().await;
    let mut consumer = Script::start(&stack, "websocket_client.py", &[], &[]);
    consumer.expect("Connected to WebSocket server").await;

    let mut created = Vec::new();
    for n in 0..30 {
        if n == 10 {
            stack.nats.kill().await;
        }
        if n == 20 {
            stack.nats.restart().await;
        }
        let product = json!({"nombre": format!("Chaos {n}"), "precio": n, "talla": "S"});
        let (status, body) =
            stack.send(reqwest::Method::POST, "/api/product/", Some(product)).await;
        assert_eq!(status, 201, "the api commits while NATS is away: {body}");
        created.push(body["id"].as_str().unwrap().to_owned());
    }
    // Every product reaches the consumer: the outbox relays what NATS missed, the broadcaster
    // reattaches where it left off, and the seed socket stayed open throughout.
    let mut missing: std::collections::BTreeSet<String> = created.iter().cloned().collect();
    while !missing.is_empty() {
        let line = consumer.expect("ID: ").await;
        missing.remove(line.trim_start_matches("📦 ID: ").trim());
    }
    let reconnects = consumer.seen.iter().filter(|l| l.contains("Connected to WebSocket")).count();
    assert_eq!(reconnects, 1, "the seed socket never dropped: {:#?}", consumer.seen);
}
