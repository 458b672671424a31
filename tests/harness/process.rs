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

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, what: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{what} did not open port {port} within {timeout:?}");
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
