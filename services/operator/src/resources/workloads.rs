//! The api, broadcaster and worker Deployments: image and command, `COURIER_*` environment,
//! probes, hardened security context, resources, volumes and placement. Each pod gets only the
//! secrets its component uses: the RS256 private key goes to the api alone, the public key to
//! the api and the broadcaster, each NATS password to its own component; key files are
//! mounted read-only (one Secret key per volume), never put in the environment.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment},
        core::v1::{
            Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
            EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, LocalObjectReference,
            PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
            SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
            TopologySpreadConstraint, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};

use super::{
    BuildInput, COLLECTIONS_DIR, COLLECTIONS_KEY, Component, RUN_AS_USER, WEBHOOK_SECRETS_DIR,
    config_map_name, labels, metadata, selector_labels, service_account_name,
};
use crate::crd::{
    Courier,
    courier::{ComponentSpec, SecretKeyRef},
};

/// How long a pod gets to drain after SIGTERM (in-flight requests, WebSocket goodbyes, task acks).
const TERMINATION_GRACE_SECONDS: i64 = 30;
/// Where secret files are mounted, one directory per volume.
pub const SECRETS_DIR: &str = "/var/run/secrets/courier";
/// Owner and group (the pod's fsGroup) may read; nobody may write.
const SECRET_FILE_MODE: i32 = 0o440;

/// One Secret key mounted as a file into one component.
struct SecretFile<'a> {
    volume: &'static str,
    file: &'static str,
    secret: &'a SecretKeyRef,
    /// The variable that tells the service where the file is.
    env: &'static str,
}

impl SecretFile<'_> {
    fn dir(&self) -> String {
        format!("{SECRETS_DIR}/{}", self.volume)
    }

    fn path(&self) -> String {
        format!("{}/{}", self.dir(), self.file)
    }

    fn volume(&self) -> Volume {
        Volume {
            name: self.volume.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(self.secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: self.secret.key.clone(),
                    path: self.file.into(),
                    mode: None,
                }]),
                default_mode: Some(SECRET_FILE_MODE),
                optional: Some(false),
            }),
            ..Volume::default()
        }
    }

    fn mount(&self) -> VolumeMount {
        VolumeMount {
            name: self.volume.into(),
            mount_path: self.dir(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    }
}

/// The secret files `component` gets.
fn secret_files(courier: &Courier, component: Component) -> Vec<SecretFile<'_>> {
    let spec = &courier.spec;
    let mut files = Vec::new();
    if let Some(pair) = &spec.jwt_key_pair {
        if component == Component::Api {
            files.push(SecretFile {
                volume: "jwt-private-key",
                file: "private.pem",
                secret: &pair.private_key_secret_ref,
                env: "COURIER_JWT_PRIVATE_KEY_FILE",
            });
        }
        if component.verifies_tokens() {
            files.push(SecretFile {
                volume: "jwt-public-key",
                file: "public.pem",
                secret: &pair.public_key_secret_ref,
                env: "COURIER_JWT_PUBLIC_KEY_FILE",
            });
        }
    }
    if let Some(nats) = &component_spec(courier, component).nats_credentials {
        files.push(SecretFile {
            volume: "nats-password",
            file: "password",
            secret: &nats.password_secret_ref,
            env: "COURIER_NATS_PASSWORD_FILE",
        });
    }
    files
}

fn component_spec(courier: &Courier, component: Component) -> &ComponentSpec {
    match component {
        Component::Api => &courier.spec.api,
        Component::Broadcaster => &courier.spec.broadcaster,
        Component::Worker => &courier.spec.worker.component,
    }
}

pub fn deployment(
    courier: &Courier,
    component: Component,
    replicas: i32,
    input: &BuildInput,
) -> Deployment {
    let spec = component_spec(courier, component);
    let mut pod_annotations = spec.pod_annotations.clone();
    pod_annotations.retain(|k, _| !k.is_empty());
    let webhook_secrets =
        if component == Component::Worker { input.webhook_secrets() } else { Vec::new() };
    if component == Component::Worker {
        pod_annotations.insert(COLLECTIONS_HASH_ANNOTATION.to_owned(), input.collections_hash());
    }
    Deployment {
        metadata: metadata(courier, component.object_name(courier), Some(component)),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            revision_history_limit: Some(5),
            selector: LabelSelector {
                match_labels: Some(selector_labels(courier, Some(component))),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Surge first, never drop below the desired count during a rollout.
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(courier, Some(component))),
                    annotations: (!pod_annotations.is_empty()).then_some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(courier, component, spec, &webhook_secrets)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The worker pod annotation carrying [`BuildInput::collections_hash`].
pub const COLLECTIONS_HASH_ANNOTATION: &str = "courier.dev/collections-hash";

/// The volume of a webhook Secret (`webhook-<secret>`, within the 63 characters of a name).
fn webhook_volume(secret: &str) -> String {
    let name = format!("webhook-{secret}");
    name[..name.len().min(63)].trim_end_matches('-').to_owned()
}

fn pod_spec(
    courier: &Courier,
    component: Component,
    spec: &ComponentSpec,
    webhook_secrets: &[String],
) -> PodSpec {
    let placement = &spec.placement;
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".into())),
            ..Default::default()
        }),
        ..Volume::default()
    }];
    if component.reads_collections() {
        volumes.push(Volume {
            name: "collections".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(courier),
                ..Default::default()
            }),
            ..Volume::default()
        });
    }
    volumes.extend(secret_files(courier, component).iter().map(SecretFile::volume));
    volumes.extend(webhook_secrets.iter().map(|secret| Volume {
        name: webhook_volume(secret),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.clone()),
            default_mode: Some(SECRET_FILE_MODE),
            optional: Some(false),
            ..Default::default()
        }),
        ..Volume::default()
    }));
    PodSpec {
        service_account_name: Some(service_account_name(courier)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            run_as_group: Some(RUN_AS_USER),
            fs_group: Some(RUN_AS_USER),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..PodSecurityContext::default()
        }),
        containers: vec![container(courier, component, spec, webhook_secrets)],
        image_pull_secrets: (!courier.spec.image.pull_secrets.is_empty()).then(|| {
            courier
                .spec
                .image
                .pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        volumes: Some(volumes),
        node_selector: (!placement.node_selector.is_empty())
            .then(|| placement.node_selector.clone()),
        tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
        affinity: placement.affinity.clone(),
        topology_spread_constraints: match &placement.topology_spread_constraints {
            Some(custom) if custom.is_empty() => None,
            Some(custom) => Some(custom.clone()),
            None => Some(default_spread(courier, component)),
        },
        ..PodSpec::default()
    }
}

/// Spread replicas over nodes and zones when the scheduler can; never block scheduling for it.
fn default_spread(courier: &Courier, component: Component) -> Vec<TopologySpreadConstraint> {
    ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(courier, Some(component))),
                ..LabelSelector::default()
            }),
            ..TopologySpreadConstraint::default()
        })
        .collect()
}

fn container(
    courier: &Courier,
    component: Component,
    spec: &ComponentSpec,
    webhook_secrets: &[String],
) -> Container {
    let image = &courier.spec.image;
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..VolumeMount::default()
    }];
    if component.reads_collections() {
        mounts.push(VolumeMount {
            name: "collections".into(),
            mount_path: COLLECTIONS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts.extend(secret_files(courier, component).iter().map(SecretFile::mount));
    mounts.extend(webhook_secrets.iter().map(|secret| VolumeMount {
        name: webhook_volume(secret),
        mount_path: format!("{WEBHOOK_SECRETS_DIR}/{secret}"),
        read_only: Some(true),
        ..VolumeMount::default()
    }));
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(component.port_name().into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    Container {
        name: component.as_str().into(),
        image: Some(format!("{}:{}", image.repository, image.tag)),
        image_pull_policy: Some(image.pull_policy.as_str().into()),
        command: Some(vec![component.binary().into()]),
        ports: Some(vec![ContainerPort {
            name: Some(component.port_name().into()),
            container_port: component.port(),
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env(courier, component, spec)),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        // Up to 60 s to start (first NATS/MongoDB connection), then liveness takes over.
        startup_probe: Some(probe("/healthz", 2, 30)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 3)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("100m".into())),
            ("memory".to_owned(), Quantity("128Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("512Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

fn value(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn secret(name: &str, secret: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.name.clone(),
                key: secret.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The `COURIER_*` variables each service reads, then the spec's extra env; an extra variable
/// with an operator-set name replaces it in place (server-side apply rejects duplicate names).
fn env(courier: &Courier, component: Component, spec: &ComponentSpec) -> Vec<EnvVar> {
    let s = &courier.spec;
    let mut vars =
        vec![value("COURIER_NATS_URL", &s.nats_url), value("COURIER_LOG_FORMAT", "json")];
    if let Some(nats) = &spec.nats_credentials {
        vars.push(value("COURIER_NATS_USER", &nats.user));
    }
    let listen = format!("0.0.0.0:{}", component.port());
    match component {
        Component::Api => {
            vars.push(value("COURIER_API_LISTEN", listen));
            vars.push(secret("COURIER_MONGODB_URI", &s.mongodb.uri_secret_ref));
            vars.push(value("COURIER_MONGODB_DATABASE", &s.mongodb.database));
            if let Some(hs256) = &s.jwt_secret_ref {
                vars.push(secret("COURIER_JWT_SECRET", hs256));
            }
            vars.push(value(
                "COURIER_COLLECTIONS_FILE",
                format!("{COLLECTIONS_DIR}/{COLLECTIONS_KEY}"),
            ));
        }
        Component::Broadcaster => {
            vars.push(value("COURIER_BROADCASTER_LISTEN", listen));
            if let Some(hs256) = &s.jwt_secret_ref {
                vars.push(secret("COURIER_JWT_SECRET", hs256));
            }
            vars.push(value(
                "COURIER_COLLECTIONS_FILE",
                format!("{COLLECTIONS_DIR}/{COLLECTIONS_KEY}"),
            ));
        }
        Component::Worker => {
            vars.push(value("COURIER_WORKER_METRICS_LISTEN", listen));
            vars.push(secret("COURIER_MONGODB_URI", &s.mongodb.uri_secret_ref));
            vars.push(value("COURIER_MONGODB_DATABASE", &s.mongodb.database));
            vars.push(value(
                "COURIER_COLLECTIONS_FILE",
                format!("{COLLECTIONS_DIR}/{COLLECTIONS_KEY}"),
            ));
        }
    }
    for file in secret_files(courier, component) {
        vars.push(value(file.env, file.path()));
    }
    for extra in &spec.env {
        match vars.iter_mut().find(|v| v.name == extra.name) {
            Some(existing) => *existing = extra.clone(),
            None => vars.push(extra.clone()),
        }
    }
    vars
}
