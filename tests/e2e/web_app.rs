//! The web app in a real browser: a real stack (nats-server, the store, the api serving the app,
//! a broadcaster process this test can kill and restart, a worker), driven by
//! `tests/browser/web-app.mjs` — playwright-core with Debian's chromium. The script asks for
//! process faults over a line protocol: it prints `@@control <command>` and waits for one
//! answer line on its stdin.

use std::{path::PathBuf, process::Stdio, time::Duration};

use courier_tests::{
    NatsServer, RunningApi, RunningWorker, Stack, StoreServer, chaos, services::ServiceProcess,
    workspace_root,
};
use courier_worker::WorkerConfig;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    process::Command,
};

/// The whole browser run (nineteen scenarios, two broadcaster restarts; ~45 s) stays well under this.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// Appended to the shipped `collections.yaml`: memos anyone signed in may read (reads need a
/// token, also on the WebSocket) with an enum field. The shipped `notes` has per-document rules.
const MEMOS: &str = "  - name: memos
    schema:
      type: object
      additionalProperties: false
      required: [title]
      properties:
        title: {type: string, minLength: 1, maxLength: 100}
        priority: {type: string, enum: [low, normal, high]}
        done: {type: boolean}
    access:
      read: authenticated
      write: authenticated
";

const SETUP_HINT: &str = "run `./dev test` (it apt-installs Debian's chromium and runs `npm ci` in tests/browser), \
     or by hand: `apt-get install chromium` and `cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci`";

/// node, chromium and the script's packages; a missing one fails the test (never skips it).
fn browser_tools() -> (PathBuf, PathBuf) {
    let on_path = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
        })
    };
    let node = on_path("node").unwrap_or_else(|| {
        panic!("node is not installed (the browser tests need Node 20+): {SETUP_HINT}")
    });
    let chromium = std::env::var_os("COURIER_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.is_file(),
        "{} is missing (the browser tests use Debian's chromium): {SETUP_HINT}",
        chromium.display()
    );
    let packages = workspace_root().join("tests/browser/node_modules/playwright-core/package.json");
    assert!(packages.is_file(), "tests/browser has no node_modules/playwright-core: {SETUP_HINT}");
    (node, chromium)
}

/// Does what the script asks; the answer line starts with `ok` or says what went wrong.
async fn handle(command: &str, broadcaster: &mut ServiceProcess) -> String {
    match command {
        "stop-broadcaster" => {
            broadcaster.kill9().await;
            "ok stopped (SIGKILL)".to_owned()
        }
        "start-broadcaster" => {
            broadcaster.restart().await;
            "ok started".to_owned()
        }
        other => format!("error: unknown command '{other}'"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_works_in_a_real_browser() {
    let (node, chromium) = browser_tools();
    courier_tests::init_test_logging();
    let (nats, store) = tokio::join!(NatsServer::start(), StoreServer::start());
    let database = chaos::fresh_database();

    // The shipped collections plus one any signed-in user may read (no shipped one is that).
    let dir = tempfile::tempdir().expect("temp dir");
    let collections_file = dir.path().join("collections.yaml");
    let shipped = std::fs::read_to_string(workspace_root().join("collections.yaml"))
        .expect("collections.yaml");
    std::fs::write(&collections_file, format!("{shipped}\n{MEMOS}"))
        .expect("writing the test collections");
    let collections = collections_file.display().to_string();

    // The broadcaster as a process, so the script can have it killed and restarted.
    let mut broadcaster = chaos::broadcaster_process(
        &nats.url(),
        &[
            ("COURIER_COLLECTIONS_FILE", collections),
            ("COURIER_JWT_SECRET", courier_tests::TEST_JWT_SECRET.to_owned()),
        ],
    )
    .await;

    let mut api_config = Stack::api_config(&store, &database, &nats);
    api_config.public_ws_url = broadcaster.ws_url();
    api_config.collections_file = collections_file.clone();
    let api = RunningApi::start(api_config).await;

    let mut worker_config = WorkerConfig::for_local(&nats.url());
    worker_config.mongodb_uri = store.uri();
    worker_config.mongodb_database = database.clone();
    let worker_nats = async_nats::connect(nats.url()).await.expect("NATS for the worker");
    let handlers = courier_worker::standard_handlers(&worker_config, worker_nats)
        .await
        .expect("worker handlers");
    let worker = RunningWorker::start(worker_config, handlers).await;

    let script = workspace_root().join("tests/browser/web-app.mjs");
    let mut child = Command::new(&node)
        .arg(&script)
        .current_dir(workspace_root().join("tests/browser"))
        .env("COURIER_WEB_URL", api.url())
        .env("COURIER_CHROMIUM", &chromium)
        .env("COURIER_TEST_CONTROL", "stdio")
        .env("COURIER_TEST_ADMIN_USERNAME", courier_tests::TEST_ADMIN_USERNAME)
        .env("COURIER_TEST_ADMIN_PASSWORD", courier_tests::TEST_ADMIN_PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", node.display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut stderr = child.stderr.take().expect("piped stderr");
    let stderr_text = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut output = String::new();
    let run = async {
        while let Some(line) = stdout.next_line().await.expect("reading the script's output") {
            if let Some(command) = line.strip_prefix("@@control ") {
                let answer = handle(command.trim(), &mut broadcaster).await;
                output.push_str(&format!("[driver] {command}: {answer}\n"));
                stdin
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .expect("answering the script");
                stdin.flush().await.expect("answering the script");
            } else {
                output.push_str(&line);
                output.push('\n');
            }
        }
        child.wait().await.expect("waiting for node")
    };
    let status = tokio::time::timeout(RUN_TIMEOUT, run).await;
    let errors = match &status {
        Ok(_) => stderr_text.await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let report = format!(
        "--- {} output ---\n{output}--- stderr ---\n{errors}--- broadcaster log (last 3000 bytes) ---\n{}",
        script.display(),
        tail(&broadcaster.log_text(), 3000)
    );
    match status {
        Ok(status) => assert!(status.success(), "the browser tests failed ({status}):\n{report}"),
        Err(_) => panic!("the browser tests did not finish within {RUN_TIMEOUT:?}:\n{report}"),
    }
    assert!(
        output.contains(" 0 failed") && !output.contains("not ok"),
        "unexpected summary:\n{report}"
    );
    eprintln!("{output}");

    worker.stop().await;
    api.stop().await;
    broadcaster.terminate(Duration::from_secs(5)).await;
}

fn tail(text: &str, bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
