//! Command line and environment (`COURIER_*`) of the `courier-operator` binary: `run` (the
//! default) and `render`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use courier_core::config::{NatsAuthArgs, TelemetryArgs};

use crate::policy::PolicyArgs;

#[derive(Debug, Parser)]
#[command(
    name = "courier-operator",
    version,
    about = "Reconciles Courier and Collection resources into Courier workloads"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers (the default).
    Run(RunArgs),
    /// Print the objects the operator would apply for the given Courier and Collection
    /// manifests, as multi-document YAML, without talking to a cluster.
    Render(RenderArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// The operator's NATS user, for reading the task backlog of every Courier's NATS.
    #[command(flatten)]
    pub nats: NatsAuthArgs,
    /// What a Courier may run (docs/operator.md, "What a Courier may run").
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "COURIER_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, env = "COURIER_OPERATOR_LEASE_NAME", default_value = "courier-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; default: the client's namespace (the pod's, in a cluster).
    #[arg(long, env = "COURIER_OPERATOR_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease; default: `$HOSTNAME` (the pod name).
    #[arg(long, env = "COURIER_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// Seconds a Lease stays valid after its last renewal.
    #[arg(long, env = "COURIER_OPERATOR_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=300))]
    pub lease_duration_seconds: u64,
    /// Seconds between backlog reads of a Courier with worker autoscaling on.
    #[arg(long, env = "COURIER_OPERATOR_POLL_INTERVAL_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval_seconds: u64,
    /// Seconds between drift checks of every Courier.
    #[arg(long, env = "COURIER_OPERATOR_RESYNC_INTERVAL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub resync_interval_seconds: u64,
}

impl RunArgs {
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }

    /// Renew at a third of the lease, give up at two thirds: the controllers stop well before
    /// a standby may take over.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration() / 3
    }

    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration() * 2 / 3
    }
}

#[derive(Debug, Clone, Args)]
pub struct RenderArgs {
    /// Manifest file(s) holding `Courier` and `Collection` documents (`-` reads stdin).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Namespace for documents that name none (as `kubectl apply` would use).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Worker replicas to render for a Courier with autoscaling on (default: its minReplicas).
    #[arg(long)]
    pub worker_replicas: Option<i32>,
    /// The same rules as `run`: a Courier the operator would refuse fails the render.
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent_and_run_is_the_default() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["courier-operator", "--lease-duration-seconds", "30"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.renew_interval(), Duration::from_secs(10));
        assert_eq!(cli.run.renew_deadline(), Duration::from_secs(20));
        let cli =
            Cli::try_parse_from(["courier-operator", "render", "-f", "a.yaml", "-f", "b.yaml"])
                .unwrap();
        let Some(Command::Render(render)) = cli.command else { panic!("render expected") };
        assert_eq!(render.files.len(), 2);
        assert!(Cli::try_parse_from(["courier-operator", "render"]).is_err(), "-f is required");
    }
}
