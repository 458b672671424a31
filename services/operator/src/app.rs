//! Process wiring of `courier-operator`: telemetry, the ops server (`/healthz`, `/readyz`,
//! `/metrics`), the Kubernetes client, leader election around the controllers, and graceful
//! shutdown on SIGINT/SIGTERM; plus the `render` command.

use std::{io::Write, sync::Arc};

use kube::{Api, Client, runtime::events::Reporter};

use crate::{
    Result,
    autoscale::{NatsBacklog, SystemClock},
    config::{Cli, Command, RenderArgs, RunArgs},
    controller::{self, Timings},
    leader::{ApiContact, LeaderElector, LeaseConfig},
    metrics::Metrics,
    policy::Policy,
    render,
};

/// Runs the command line.
pub async fn main(cli: Cli) -> Result<()> {
    match cli.command {
        Some(Command::Render(args)) => render_command(&args),
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    }
}

fn render_command(args: &RenderArgs) -> Result<()> {
    let mut manifests = render::Manifests::default();
    for path in &args.files {
        render::read_manifests(path, &args.namespace, &mut manifests)?;
    }
    let policy = Policy::from_args(&args.policy)?;
    let rendered = render::render(&manifests, args.worker_replicas, &policy)?;
    for warning in &rendered.warnings {
        eprintln!("warning: {warning}");
    }
    std::io::stdout().write_all(rendered.yaml.as_bytes())?;
    Ok(())
}

/// The operator process: returns after a signal once the controllers drained and the lease was
/// released, or with an error (lost leadership, unusable client) for Kubernetes to restart it.
pub async fn run(args: RunArgs) -> Result<()> {
    courier_core::telemetry::init(&args.telemetry);
    let policy = Policy::from_args(&args.policy)?;
    let stop = courier_core::shutdown::on_signals();

    let mut registry = courier_core::ops::component_registry("operator");
    let metrics = Arc::new(Metrics::new(&mut registry));
    let client = Client::try_default().await?;
    let identity = args.identity();
    let lease_namespace =
        args.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());

    let contact = ApiContact::default();
    let ready_within = args.lease_duration * 2;
    let readiness = {
        let contact = contact.clone();
        courier_core::ops::Readiness::new().with_check("kubernetes", move || {
            let ok = contact.recent(ready_within);
            async move {
                if ok {
                    Ok(())
                } else {
                    Err(format!("no answer from the Kubernetes API for {ready_within:?}"))
                }
            }
        })
    };
    let listener = courier_core::ops::bind(args.listen).await?;
    tracing::info!(listen = %args.listen, %identity, lease = %format!("{lease_namespace}/{}", args.lease_name), "courier-operator starting");
    let ops = tokio::spawn(courier_core::ops::serve(
        listener,
        Arc::new(registry),
        readiness,
        stop.clone(),
    ));

    let elector = LeaderElector::new(
        Api::namespaced(client.clone(), &lease_namespace),
        LeaseConfig {
            name: args.lease_name.clone(),
            identity: identity.clone(),
            lease_duration: args.lease_duration,
            renew_interval: args.renew_interval(),
            renew_deadline: args.renew_deadline(),
        },
        contact,
    );
    let timings = Timings {
        poll_interval: args.poll_interval,
        resync_interval: args.resync_interval,
        ..Timings::default()
    };
    let reporter = Reporter { controller: "courier-operator".into(), instance: Some(identity) };
    let led = elector
        .lead(stop.clone(), &metrics, |leading| {
            controller::run(
                client,
                Arc::new(NatsBacklog::new(args.nats.clone())),
                Arc::new(SystemClock),
                metrics.clone(),
                controller::Settings { reporter, timings, policy },
                leading,
            )
        })
        .await;

    stop.cancel();
    match ops.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "ops server ended with an error"),
        Err(err) => tracing::warn!(%err, "ops server task failed"),
    }
    if let Err(err) = &led {
        tracing::error!(%err, "stopping");
    } else {
        tracing::info!("stopped");
    }
    led
}
