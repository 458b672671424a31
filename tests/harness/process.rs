//! Child processes that die with the test: killed on drop, and (Linux) sent SIGKILL by the
//! kernel if the test process itself dies, so a crashed test never leaves servers behind.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use tokio::process::{Child, Command};

/// Finds an executable: `$env_var`, then `.dev/venv/bin/<name>` in the workspace, then `PATH`.
pub fn find_tool(name: &str, env_var: &str) -> PathBuf {
    if let Ok(path) = std::env::var(env_var) {
        return PathBuf::from(path);
    }
    let local = crate::workspace_root().join(".dev/venv/bin").join(name);
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.exists())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} not found: run ./dev test (it installs it into .dev/venv) or set {env_var}"
            )
        })
}

/// A Courier binary built next to the test executable (`target/<profile>/<name>`).
pub fn courier_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (./dev test does)",
        path.display()
    );
    path
}

/// Spawns `program` with its output appended to `log`.
pub fn spawn(program: &Path, args: &[String], envs: &[(String, String)], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    let err = out.try_clone().expect("log file");
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    #[cfg(target_os = "linux")]
    unsafe {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().unwrap_or_else(|err| panic!("cannot start {}: {err}", program.display()))
}

/// Starts a server process with `spawn` (which sends its output to `log`) and returns it with
/// the port it listens on, read from the first complete line of its new output that contains
/// `marker` and names `127.0.0.1:<port>`. Servers bind the port they are given, 0 (or nats'
/// `-1`) asking the OS for a free one, so no port is chosen by a racy probe; a restart binds
/// the recorded port again. If that port is taken at the moment (its process exits with
/// "address already in use"), it is spawned again, with backoff, until `timeout`. Panics with
/// the log when the server exits for another reason or never says where it listens.
pub async fn spawn_listening(
    what: &str,
    log: &Path,
    marker: &str,
    timeout: Duration,
    mut spawn: impl FnMut() -> Child,
) -> (Child, u16) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut backoff = courier_core::backoff::Backoff::new(Duration::from_secs(1));
    loop {
        let from = std::fs::metadata(log).map_or(0, |meta| meta.len());
        let mut child = spawn();
        let new_output = || {
            let bytes = std::fs::read(log).unwrap_or_default();
            let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        };
        let exited = loop {
            if let Some(port) = listening_port(&new_output(), marker) {
                return (child, port);
            }
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                kill9(&mut child).await;
                panic!(
                    "{what} did not log where it listens (a line with '{marker}') within \
                     {timeout:?}; its log ({}):\n{}",
                    log.display(),
                    new_output()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let output = new_output();
        let port_taken = output.to_lowercase().contains("address already in use");
        if !port_taken || tokio::time::Instant::now() >= deadline {
            panic!(
                "{what} exited ({exited}) before listening; its log ({}):\n{output}",
                log.display()
            );
        }
        backoff.sleep().await;
    }
}

/// The port on `127.0.0.1` named by the first complete line of `output` that contains `marker`.
pub fn listening_port(output: &str, marker: &str) -> Option<u16> {
    const HOST: &str = "127.0.0.1:";
    output
        .split_inclusive('\n')
        .filter(|line| line.ends_with('\n') && line.contains(marker))
        .find_map(|line| {
            line.match_indices(HOST).find_map(|(at, _)| {
                let rest = &line[at + HOST.len()..];
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                rest[..digits].parse::<u16>().ok().filter(|port| *port != 0)
            })
        })
}

/// SIGKILL, like `kill -9`, and reap.
pub async fn kill9(child: &mut Child) {
    let _ = child.start_kill();
    let _ = child.wait().await;
}

/// SIGTERM and wait (up to `timeout`) for a clean exit; returns the exit status if it exited.
pub async fn terminate(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => Some(status),
        _ => {
            kill9(child).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn the_port_comes_from_a_complete_marked_line() {
        let nats = "[1] [INF] Starting nats-server\n[1] [INF] Listening for client connections on 127.0.0.1:41801\n";
        assert_eq!(listening_port(nats, "Listening for client connections"), Some(41801));
        let api = r#"{"level":"INFO","message":"api listening","addr":"127.0.0.1:39001"}"#;
        assert_eq!(listening_port(api, "api listening"), None, "an unfinished line");
        assert_eq!(listening_port(&format!("{api}\n"), "api listening"), Some(39001));
        let prometheus = "msg=\"Start listening for connections\" address=127.0.0.1:0\nmsg=\"Listening on\" address=127.0.0.1:44527\n";
        assert_eq!(listening_port(prometheus, "msg=\"Listening on\""), Some(44527));
        assert_eq!(
            listening_port("worker starting metrics=127.0.0.1:0\n", "worker starting"),
            None
        );
        assert_eq!(listening_port("other 127.0.0.1:5\n", "api listening"), None);
    }
}
