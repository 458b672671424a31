//! `courier-api`: tune the allocator for argon2 (see `bound_large_allocations`), parse config, start
//! telemetry, run until SIGINT/SIGTERM — or run one administration command (`grant-role`) and exit.

use clap::Parser;
use courier_api::{ApiConfig, Application, config::Command};

/// glibc raises its mmap threshold after the first large free, so argon2's ~19 MiB blocks then
/// come from the heap, where small allocations made meanwhile fragment them and the heap keeps
/// growing (1,000 concurrent registrations: 864 MiB peak RSS with 2 hashes at a time). A fixed
/// 1 MiB threshold keeps every large block in its own mapping, returned when freed (85 MiB).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn bound_large_allocations() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    let applied = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20) };
    if applied != 1 {
        eprintln!("courier-api: mallopt(M_MMAP_THRESHOLD) failed; memory under load may grow");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn bound_large_allocations() {}

fn main() -> anyhow::Result<()> {
    bound_large_allocations();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let config = ApiConfig::parse();
    courier_core::telemetry::init(&config.telemetry);
    if let Some(Command::GrantRole { username, role }) = &config.command {
        let message =
            courier_api::auth::bootstrap::grant_role_command(&config, username, role).await?;
        println!("{message}");
        return Ok(());
    }
    let shutdown = courier_core::shutdown::on_signals();
    Application::build(config).await?.run(shutdown).await
}
