//! Command line and environment (`COURIER_*`) of the `courier-operator` binary: `run` (the
//! default) and `render`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use courier_core::config::{NatsAuthArgs, TelemetryArgs, duration_in, seconds_or_duration};

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
    /// This replica's identity in the Lease; default: `<host name>-<pid>` (the host name is the
    /// pod name in a cluster).
    #[arg(long, env = "COURIER_OPERATOR_IDENTITY")]
    pub identity: Option<String>,
    /// How long a Lease stays valid after its last renewal: `15`, `30s`, `2m` (a bare number is
    /// seconds; 3 s to 5 m).
    #[arg(
        long = "lease-duration-seconds",
        env = "COURIER_OPERATOR_LEASE_DURATION_SECONDS",
        default_value = "15",
        value_parser = duration_in(seconds_or_duration, secs(3), secs(300))
    )]
    pub lease_duration: Duration,
    /// Time between backlog reads of a Courier with worker autoscaling on: `15`, `30s`, `2m` (a
    /// bare number is seconds; 1 s to 1 h).
    #[arg(
        long = "poll-interval-seconds",
        env = "COURIER_OPERATOR_POLL_INTERVAL_SECONDS",
        default_value = "15",
        value_parser = duration_in(seconds_or_duration, secs(1), secs(3600))
    )]
    pub poll_interval: Duration,
    /// Time between drift checks of every Courier: `300`, `5m`, `1h` (a bare number is seconds;
    /// 10 s to 24 h).
    #[arg(
        long = "resync-interval-seconds",
        env = "COURIER_OPERATOR_RESYNC_INTERVAL_SECONDS",
        default_value = "300",
        value_parser = duration_in(seconds_or_duration, secs(10), secs(86_400))
    )]
    pub resync_interval: Duration,
}

const fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

impl RunArgs {
    /// This replica's identity in the Lease: `--identity`, else the instance id.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(courier_core::config::instance_id)
    }

    /// Renew at a third of the lease, give up at two thirds: the controllers stop well before
    /// a standby may take over.
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 3
    }

    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration * 2 / 3
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

    #[test]
    fn durations_take_a_unit_or_the_legacy_bare_seconds_within_their_ranges() {
        for text in ["30000ms", "30s", "30"] {
            let cli = Cli::try_parse_from([
                "courier-operator",
                "--lease-duration-seconds",
                text,
                "--poll-interval-seconds",
                text,
                "--resync-interval-seconds",
                text,
            ])
            .unwrap_or_else(|err| panic!("{text}: {err}"));
            let run = cli.run;
            assert_eq!([run.lease_duration, run.poll_interval, run.resync_interval], [secs(30); 3]);
        }
        for text in ["3000ms", "3s", "3"] {
            let cli = Cli::try_parse_from(["courier-operator", "--lease-duration-seconds", text])
                .unwrap_or_else(|err| panic!("{text}: {err}"));
            assert_eq!(cli.run.lease_duration, secs(3), "{text}");
        }
        let defaults = Cli::try_parse_from(["courier-operator"]).unwrap().run;
        assert_eq!(
            [defaults.lease_duration, defaults.poll_interval, defaults.resync_interval],
            [secs(15), secs(15), secs(300)]
        );
        for (flag, bad) in [
            ("--lease-duration-seconds", "2"),
            ("--lease-duration-seconds", "2999ms"),
            ("--lease-duration-seconds", "6m"),
            ("--poll-interval-seconds", "0"),
            ("--resync-interval-seconds", "25h"),
            ("--resync-interval-seconds", "soon"),
        ] {
            assert!(Cli::try_parse_from(["courier-operator", flag, bad]).is_err(), "{flag} {bad}");
        }
    }

    #[test]
    fn the_identity_defaults_to_the_instance_id() {
        let run = Cli::try_parse_from(["courier-operator"]).unwrap().run;
        assert_eq!(run.identity(), courier_core::config::instance_id());
        let run = Cli::try_parse_from(["courier-operator", "--identity", "op-0"]).unwrap().run;
        assert_eq!(run.identity(), "op-0");
    }
}
