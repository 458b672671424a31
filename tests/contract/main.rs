//! The API contract test: a real api (nats-server with Courier's NATS users, SecantusDB) on a
//! free port, fuzzed by schemathesis (PyPI; `./dev test` installs it into `.dev/venv`) from its
//! own `/openapi.json`, signed in: no 5xx, every response as documented (status, content type,
//! headers, body), schema-valid requests accepted and schema-violating ones refused.
//! Settings: `tests/contract/schemathesis.toml`; docs/api-contract.md.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use courier_tests::{
    RunningApi, Stack, StoreServer,
    nats_auth::AuthNats,
    process::find_tool,
    services::{access_token, login},
};
use serde_json::{Value, json};

/// Generated cases per operation in the fuzzing phase (51 operations; with the coverage phase's
/// cases about 3,800 in under a minute on 2 cores). `COURIER_CONTRACT_MAX_EXAMPLES` overrides it.
const MAX_EXAMPLES: u32 = 50;
/// The whole schemathesis run's deadline (it normally takes well under half of it).
const RUN_TIMEOUT: Duration = Duration::from_secs(8 * 60);
/// At least this many generated cases, or the run proves too little.
const MIN_CASES: u64 = 1_000;

fn config_file() -> PathBuf {
    courier_tests::workspace_root().join("tests/contract/schemathesis.toml")
}

/// Where the run leaves its reports (JUnit and the schemathesis output).
fn report_dir() -> PathBuf {
    let dir = courier_tests::workspace_root().join("target/contract");
    std::fs::create_dir_all(&dir).expect("target/contract");
    dir
}

/// How many cases schemathesis generated: the `N generated` of its summary.
fn generated_cases(output: &str) -> Option<u64> {
    let line = output.lines().rev().find(|l| l.contains(" generated"))?;
    let before = &line[..line.find(" generated")?];
    before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// A room the signed-in user owns, with a message from them in it, so chat operations meet a
/// real room (schemathesis draws it for `{id}` half the time; the rest are random ids).
async fn seed_chat(http: &reqwest::Client, api: &str, token: &str) -> (String, String) {
    let room: Value = http
        .post(format!("{api}/api/v1/chats"))
        .bearer_auth(token)
        .json(&json!({"name": "contract room", "topic": "fuzzed"}))
        .send()
        .await
        .expect("create a room")
        .json()
        .await
        .expect("room JSON");
    let room_id = room["id"].as_str().expect("room id").to_owned();
    let message: Value = http
        .post(format!("{api}/api/v1/chats/{room_id}/messages"))
        .bearer_auth(token)
        .json(&json!({"text": "hello"}))
        .send()
        .await
        .expect("send a message")
        .json()
        .await
        .expect("message JSON");
    (room_id, message["id"].as_str().expect("message id").to_owned())
}

async fn run_schemathesis(
    schemathesis: &Path,
    api: &str,
    envs: &[(&str, String)],
) -> (std::process::ExitStatus, String) {
    let reports = report_dir();
    let max_examples = std::env::var("COURIER_CONTRACT_MAX_EXAMPLES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(MAX_EXAMPLES);
    let mut command = tokio::process::Command::new(schemathesis);
    command
        .arg("--config-file")
        .arg(config_file())
        .arg("--no-color")
        .arg("run")
        .arg(format!("{api}/openapi.json"))
        .args(["--max-examples", &max_examples.to_string()])
        .args(["--report", "junit"])
        .arg("--report-dir")
        .arg(&reports)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(&reports)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|err| {
        panic!("cannot run {}: {err} (./dev test installs it)", schemathesis.display())
    });
    let output = tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .expect("schemathesis output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(reports.join("schemathesis.txt"), &text).expect("write the output");
    (output.status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_its_openapi_contract_under_fuzzing() {
    courier_tests::init_test_logging();
    let schemathesis = find_tool("schemathesis", "COURIER_SCHEMATHESIS");
    let (nats, store) = tokio::join!(AuthNats::start(), StoreServer::start());
    let database = format!("courier_contract_{}", uuid::Uuid::now_v7().simple());
    let mut config = Stack::api_config(&store, &database, &nats.server);
    config.nats.auth = nats.auth("api");
    let api = RunningApi::start(config).await;
    let url = api.url();
    let http = reqwest::Client::new();

    let token = access_token(&http, &url, "contract-user").await;
    let (room, message) = seed_chat(&http, &url, &token).await;
    // The admin-only operations (the queues) carry the bootstrap admin's token.
    let admin_token =
        login(&http, &url, courier_tests::TEST_ADMIN_USERNAME, courier_tests::TEST_ADMIN_PASSWORD)
            .await;

    let started = Instant::now();
    let envs = [
        ("COURIER_CONTRACT_TOKEN", token),
        ("COURIER_CONTRACT_ADMIN_TOKEN", admin_token),
        ("COURIER_CONTRACT_ROOM", room),
        ("COURIER_CONTRACT_MESSAGE", message),
        (
            "COURIER_CONTRACT_HOOKS",
            courier_tests::workspace_root().join("tests/contract/hooks.py").display().to_string(),
        ),
    ];
    let (status, output) = run_schemathesis(&schemathesis, &url, &envs).await;
    let elapsed = started.elapsed();
    println!("{output}");
    println!("schemathesis took {:.1} s", elapsed.as_secs_f64());
    api.stop().await;

    assert!(
        status.success(),
        "schemathesis found contract violations ({status}); output above and in target/contract/"
    );
    let generated = generated_cases(&output).unwrap_or(0);
    assert!(
        generated >= MIN_CASES,
        "only {generated} cases were generated (at least {MIN_CASES} wanted)"
    );
}

#[test]
fn the_case_count_is_read_from_the_summary() {
    let output = "Test cases:\n  2208 generated, 2208 passed, 36 skipped\n\nSeed: 1\n";
    assert_eq!(generated_cases(output), Some(2208));
    assert_eq!(generated_cases("no summary"), None);
}
