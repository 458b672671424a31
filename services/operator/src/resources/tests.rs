//! Builder tests: every field of the Courier spec lands where it should.

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Container};
use serde_json::json;

use super::*;
use crate::fixtures;

fn build_sample() -> Vec<Child> {
    build(
        &fixtures::courier(),
        &BuildInput { collections_yaml: "collections: []\n".into(), worker_replicas: 5 },
    )
    .unwrap()
}

fn deployment(children: &[Child], name: &str) -> Deployment {
    children
        .iter()
        .find_map(|c| match c {
            Child::Deployment(d) if c.name() == name => Some(d.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn container(d: &Deployment) -> Container {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0].clone()
}

fn env_of(c: &Container) -> serde_json::Map<String, serde_json::Value> {
    c.env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.clone(), serde_json::to_value(e).unwrap()))
        .collect()
}

#[test]
fn builds_every_object_in_apply_order() {
    let described: Vec<String> = build_sample().iter().map(Child::describe).collect();
    assert_eq!(
        described,
        [
            "ServiceAccount/shop",
            "ConfigMap/shop-collections",
            "Deployment/shop-api",
            "Deployment/shop-broadcaster",
            "Deployment/shop-worker",
            "Service/shop-api",
            "Service/shop-broadcaster",
            "Service/shop-worker",
            "PodDisruptionBudget/shop-api",
            "PodDisruptionBudget/shop-broadcaster",
            "PodDisruptionBudget/shop-worker",
        ]
    );
}

#[test]
fn every_object_is_owned_labelled_namespaced_and_hashed() {
    for child in build_sample() {
        let meta = child.meta();
        assert_eq!(meta.namespace.as_deref(), Some("shop"), "{}", child.describe());
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("Courier", "shop", Some(true))
        );
        assert_eq!(owner.api_version, "courier.dev/v1alpha1");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "courier-operator");
        assert_eq!(labels["app.kubernetes.io/instance"], "shop");
        assert_eq!(child.applied_hash().map(str::len), Some(16));
    }
}

#[test]
fn the_hash_changes_with_the_content_only() {
    let a = build_sample();
    let b = build_sample();
    assert_eq!(a, b, "building is deterministic");
    let more = build(
        &fixtures::courier(),
        &BuildInput { collections_yaml: "collections: []\n".into(), worker_replicas: 6 },
    )
    .unwrap();
    for (before, after) in a.iter().zip(&more) {
        let changed = before.applied_hash() != after.applied_hash();
        assert_eq!(changed, before.describe() == "Deployment/shop-worker", "{}", before.describe());
    }
}

#[test]
fn image_replicas_and_command_come_from_the_spec() {
    let children = build_sample();
    for (name, binary, replicas) in [
        ("shop-api", "courier-api", 3),
        ("shop-broadcaster", "courier-broadcaster", 4),
        ("shop-worker", "courier-worker", 5),
    ] {
        let d = deployment(&children, name);
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(replicas), "{name}");
        let c = container(&d);
        assert_eq!(c.image.as_deref(), Some("ghcr.io/example/courier:1.2.3"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("Always"));
        assert_eq!(c.command, Some(vec![binary.to_owned()]));
    }
}

#[test]
fn each_service_gets_its_config_env_and_secrets() {
    let children = build_sample();
    let api = env_of(&container(&deployment(&children, "shop-api")));
    assert_eq!(api["COURIER_NATS_URL"]["value"], "nats://nats.messaging.svc:4222");
    assert_eq!(api["COURIER_API_LISTEN"]["value"], "0.0.0.0:8000");
    assert_eq!(
        api["COURIER_MONGODB_URI"]["valueFrom"]["secretKeyRef"],
        json!({"name": "mongo", "key": "uri", "optional": false})
    );
    assert_eq!(api["COURIER_MONGODB_DATABASE"]["value"], "shopdb");
    assert_eq!(
        api["COURIER_JWT_SECRET"]["valueFrom"]["secretKeyRef"],
        json!({"name": "jwt", "key": "secret", "optional": false})
    );
    assert_eq!(api["COURIER_COLLECTIONS_FILE"]["value"], "/etc/courier/collections.yaml");
    // Extra env: a new name is appended, an operator-set name is replaced.
    assert_eq!(api["COURIER_LOG"]["value"], "debug");
    assert_eq!(api["COURIER_LOG_FORMAT"]["value"], "pretty");

    let broadcaster = env_of(&container(&deployment(&children, "shop-broadcaster")));
    assert_eq!(broadcaster["COURIER_BROADCASTER_LISTEN"]["value"], "0.0.0.0:8765");
    assert_eq!(broadcaster["COURIER_LOG_FORMAT"]["value"], "json");
    assert!(broadcaster.contains_key("COURIER_JWT_SECRET"));
    assert_eq!(
        broadcaster["COURIER_COLLECTIONS_FILE"]["value"], "/etc/courier/collections.yaml",
        "it enforces read rules"
    );
    assert!(!broadcaster.contains_key("COURIER_MONGODB_URI"));

    let worker = env_of(&container(&deployment(&children, "shop-worker")));
    assert_eq!(worker["COURIER_WORKER_METRICS_LISTEN"]["value"], "0.0.0.0:9100");
    assert!(worker.contains_key("COURIER_MONGODB_URI"));
    assert!(!worker.contains_key("COURIER_JWT_SECRET"));
}

#[test]
fn the_collections_configmap_is_mounted_into_every_component() {
    let children = build_sample();
    let Child::ConfigMap(cm) = &children[1] else { panic!("second object is the ConfigMap") };
    assert_eq!(cm.data.as_ref().unwrap()["collections.yaml"], "collections: []\n");
    for name in ["shop-api", "shop-broadcaster", "shop-worker"] {
        let reader = deployment(&children, name);
        let pod = reader.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let volume =
            pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "collections").unwrap();
        assert_eq!(volume.config_map.as_ref().unwrap().name, "shop-collections");
        let mount = container(&reader)
            .volume_mounts
            .unwrap()
            .into_iter()
            .find(|m| m.name == "collections")
            .unwrap();
        // No subPath: a subPath mount would never see ConfigMap updates.
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only, mount.sub_path),
            ("/etc/courier", Some(true), None),
            "{name}"
        );
    }
    let worker = env_of(&container(&deployment(&children, "shop-worker")));
    assert_eq!(worker["COURIER_COLLECTIONS_FILE"]["value"], "/etc/courier/collections.yaml");
}

#[test]
fn the_secrets_webhooks_name_are_mounted_into_the_workers_which_roll_on_a_collections_change() {
    let collections = |secret_file: &str| {
        format!(
            "collections:\n- name: orders\n  schema: {{type: object}}\n  tasks:\n  - kind: orders.notify\n    on: [delete]\n    webhook: {{url: 'https://hooks.example.com/', secret_file: '{secret_file}'}}\n"
        )
    };
    let input = |text: String| BuildInput { collections_yaml: text, worker_replicas: 1 };
    let with_secret = input(collections("/etc/courier/webhooks/orders-hook/secret"));
    assert_eq!(with_secret.webhook_secrets(), ["orders-hook"]);
    assert!(input(collections("/var/secret")).webhook_secrets().is_empty(), "not a mounted Secret");
    assert!(input(collections("/etc/courier/webhooks/Bad_Name/x")).webhook_secrets().is_empty());

    let children = build(&fixtures::courier(), &with_secret).unwrap();
    let worker = deployment(&children, "shop-worker");
    let template = worker.spec.as_ref().unwrap().template.clone();
    let volume = template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "webhook-orders-hook")
        .cloned()
        .expect("the webhook Secret's volume");
    assert_eq!(volume.secret.unwrap().secret_name.as_deref(), Some("orders-hook"));
    let mount = container(&worker)
        .volume_mounts
        .unwrap()
        .into_iter()
        .find(|m| m.name == "webhook-orders-hook")
        .expect("mounted");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/etc/courier/webhooks/orders-hook", Some(true))
    );
    let hash = |children: &[Child]| {
        deployment(children, "shop-worker")
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .annotations
            .unwrap()[workloads::COLLECTIONS_HASH_ANNOTATION]
            .clone()
    };
    let other =
        build(&fixtures::courier(), &input(collections("/etc/courier/webhooks/b/secret"))).unwrap();
    assert_ne!(hash(&children), hash(&other), "a changed file rolls the workers");
    let api = deployment(&children, "shop-api");
    let api_volumes = api.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    assert!(api_volumes.iter().all(|v| !v.name.starts_with("webhook-")), "only workers get them");
}

#[test]
fn pods_are_hardened_and_probed_on_their_port() {
    for d in build_sample().iter().filter_map(|c| match c {
        Child::Deployment(d) => Some(d.clone()),
        _ => None,
    }) {
        let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!((psc.run_as_non_root, psc.run_as_user), (Some(true), Some(65532)));
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(pod.service_account_name.as_deref(), Some("shop"));
        let c = &pod.containers[0];
        let sc = c.security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        let port = c.ports.as_ref().unwrap()[0].clone();
        let readiness = c.readiness_probe.clone().unwrap().http_get.unwrap();
        let liveness = c.liveness_probe.clone().unwrap().http_get.unwrap();
        assert_eq!(readiness.path.as_deref(), Some("/readyz"));
        assert_eq!(liveness.path.as_deref(), Some("/healthz"));
        assert_eq!(serde_json::to_value(&readiness.port).unwrap(), json!(port.name.unwrap()));
    }
    let children = build_sample();
    let ports: Vec<i32> = ["shop-api", "shop-broadcaster", "shop-worker"]
        .iter()
        .map(|n| container(&deployment(&children, n)).ports.unwrap()[0].container_port)
        .collect();
    assert_eq!(ports, [8000, 8765, 9100]);
}

#[test]
fn resources_annotations_and_placement_come_from_the_spec() {
    let children = build_sample();
    let api = deployment(&children, "shop-api");
    let template = api.spec.as_ref().unwrap().template.clone();
    assert_eq!(template.metadata.unwrap().annotations.unwrap()["prometheus.io/scrape"], "true");
    let pod = template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "web");
    assert_eq!(pod.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
    assert!(pod.affinity.unwrap().node_affinity.is_some());
    assert_eq!(pod.topology_spread_constraints.unwrap()[0].topology_key, "rack");
    let resources = container(&api).resources.unwrap();
    assert_eq!(resources.requests.unwrap()["cpu"].0, "250m");
    assert_eq!(resources.limits.unwrap()["memory"].0, "1Gi");

    // An empty list turns spreading off; absent placement gets the defaults.
    let broadcaster =
        deployment(&children, "shop-broadcaster").spec.unwrap().template.spec.unwrap();
    assert_eq!(broadcaster.topology_spread_constraints, None);
    let worker_deploy = deployment(&children, "shop-worker");
    let worker = worker_deploy.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let keys: Vec<String> =
        worker.topology_spread_constraints.unwrap().into_iter().map(|t| t.topology_key).collect();
    assert_eq!(keys, ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]);
    let worker_resources = container(&worker_deploy).resources.unwrap();
    assert_eq!(worker_resources.requests.unwrap()["memory"].0, "128Mi");
}

#[test]
fn services_and_budgets_select_their_component() {
    let children = build_sample();
    for child in &children {
        match child {
            Child::Service(s) => {
                let spec = s.spec.as_ref().unwrap();
                let component =
                    spec.selector.as_ref().unwrap()["app.kubernetes.io/component"].clone();
                let port = &spec.ports.as_ref().unwrap()[0];
                let expected = match component.as_str() {
                    "api" => 8000,
                    "broadcaster" => 8765,
                    "worker" => 9100,
                    other => panic!("unexpected component {other}"),
                };
                assert_eq!(port.port, expected);
            }
            Child::PodDisruptionBudget(p) => {
                let spec = p.spec.as_ref().unwrap();
                assert!(
                    spec.selector
                        .as_ref()
                        .unwrap()
                        .match_labels
                        .as_ref()
                        .unwrap()
                        .contains_key("app.kubernetes.io/component")
                );
                assert_eq!(serde_json::to_value(&spec.max_unavailable).unwrap(), json!(1));
            }
            _ => {}
        }
    }
}

#[test]
fn a_courier_without_namespace_is_an_error() {
    let mut courier = fixtures::courier();
    courier.metadata.namespace = None;
    let err = build(&courier, &BuildInput { collections_yaml: String::new(), worker_replicas: 1 })
        .unwrap_err();
    assert_eq!(err.kind(), "missing_namespace");
}

#[test]
fn a_courier_read_from_a_file_has_no_owner_reference() {
    let mut courier = fixtures::courier();
    courier.metadata.uid = None;
    let children =
        build(&courier, &BuildInput { collections_yaml: String::new(), worker_replicas: 1 })
            .unwrap();
    assert!(children.iter().all(|c| c.meta().owner_references.is_none()));
}

#[test]
fn image_pull_secrets_reach_every_pod_and_are_absent_by_default() {
    for deployment_name in ["shop-api", "shop-broadcaster", "shop-worker"] {
        let pod = deployment(&build_sample(), deployment_name).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.image_pull_secrets, None, "{deployment_name}");
    }
    let mut courier = fixtures::courier();
    courier.spec.image.pull_secrets = vec!["regcred".into(), "mirror".into()];
    let children = build(
        &courier,
        &BuildInput { collections_yaml: "collections: []\n".into(), worker_replicas: 1 },
    )
    .unwrap();
    for deployment_name in ["shop-api", "shop-broadcaster", "shop-worker"] {
        let pod = deployment(&children, deployment_name).spec.unwrap().template.spec.unwrap();
        let names: Vec<String> =
            pod.image_pull_secrets.unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["regcred", "mirror"], "{deployment_name}");
    }
}

/// The fixture with RS256 keys and a NATS user per component.
fn least_privilege_courier() -> Courier {
    let mut courier = fixtures::courier();
    courier.spec.jwt_secret_ref = None;
    courier.spec.jwt_key_pair = Some(
        serde_json::from_value(json!({
            "privateKeySecretRef": {"name": "shop-jwt", "key": "private.pem"},
            "publicKeySecretRef": {"name": "shop-jwt-public", "key": "public.pem"}
        }))
        .unwrap(),
    );
    for (component, spec) in [
        ("api", &mut courier.spec.api),
        ("broadcaster", &mut courier.spec.broadcaster),
        ("worker", &mut courier.spec.worker.component),
    ] {
        spec.nats_credentials = Some(
            serde_json::from_value(json!({
                "user": format!("courier-{component}"),
                "passwordSecretRef": {"name": "shop-nats-auth", "key": component}
            }))
            .unwrap(),
        );
    }
    courier
}

/// (volume name, Secret name, key) of every Secret volume of a Deployment's pod.
fn secret_volumes(d: &Deployment) -> Vec<(String, String, String)> {
    let pod = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    pod.volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let secret = v.secret.as_ref()?;
            assert_eq!(secret.default_mode, Some(0o440), "{}: read-only files", v.name);
            let items = secret.items.as_ref().unwrap();
            assert_eq!(
                items.len(),
                1,
                "{}: one key per volume, nothing else of the Secret",
                v.name
            );
            Some((v.name.clone(), secret.secret_name.clone().unwrap(), items[0].key.clone()))
        })
        .collect()
}

#[test]
fn with_rs256_only_the_api_gets_the_private_key_and_each_component_its_own_nats_password() {
    let children = build(
        &least_privilege_courier(),
        &BuildInput { collections_yaml: "collections: []\n".into(), worker_replicas: 1 },
    )
    .unwrap();
    let volume = |name: &str, secret: &str, key: &str| (name.into(), secret.into(), key.into());

    let api = deployment(&children, "shop-api");
    assert_eq!(
        secret_volumes(&api),
        [
            volume("jwt-private-key", "shop-jwt", "private.pem"),
            volume("jwt-public-key", "shop-jwt-public", "public.pem"),
            volume("nats-password", "shop-nats-auth", "api"),
        ]
    );
    let env = env_of(&container(&api));
    assert_eq!(
        env["COURIER_JWT_PRIVATE_KEY_FILE"]["value"],
        "/var/run/secrets/courier/jwt-private-key/private.pem"
    );
    assert_eq!(
        env["COURIER_JWT_PUBLIC_KEY_FILE"]["value"],
        "/var/run/secrets/courier/jwt-public-key/public.pem"
    );
    assert_eq!(env["COURIER_NATS_USER"]["value"], "courier-api");
    assert_eq!(
        env["COURIER_NATS_PASSWORD_FILE"]["value"],
        "/var/run/secrets/courier/nats-password/password"
    );
    assert!(!env.contains_key("COURIER_JWT_SECRET"), "no HS256 secret with RS256");
    let mounts = container(&api).volume_mounts.unwrap();
    let private = mounts.iter().find(|m| m.name == "jwt-private-key").unwrap();
    assert_eq!(private.read_only, Some(true));
    assert_eq!(private.mount_path, "/var/run/secrets/courier/jwt-private-key");

    let broadcaster = deployment(&children, "shop-broadcaster");
    assert_eq!(
        secret_volumes(&broadcaster),
        [
            volume("jwt-public-key", "shop-jwt-public", "public.pem"),
            volume("nats-password", "shop-nats-auth", "broadcaster"),
        ],
        "the broadcaster can verify tokens, never sign them"
    );
    let env = env_of(&container(&broadcaster));
    assert!(!env.contains_key("COURIER_JWT_PRIVATE_KEY_FILE"));
    assert_eq!(env["COURIER_NATS_USER"]["value"], "courier-broadcaster");

    let worker = deployment(&children, "shop-worker");
    assert_eq!(secret_volumes(&worker), [volume("nats-password", "shop-nats-auth", "worker")]);
    let env = env_of(&container(&worker));
    assert_eq!(env["COURIER_NATS_USER"]["value"], "courier-worker");
    assert!(!env.keys().any(|k| k.starts_with("COURIER_JWT")), "{:?}", env.keys());
}

#[test]
fn without_nats_credentials_or_key_files_no_secret_volume_is_mounted() {
    for d in ["shop-api", "shop-broadcaster", "shop-worker"] {
        let deployment = deployment(&build_sample(), d);
        assert!(secret_volumes(&deployment).is_empty(), "{d}");
        let env = env_of(&container(&deployment));
        assert!(!env.contains_key("COURIER_NATS_USER"), "{d}");
        assert!(!env.contains_key("COURIER_NATS_PASSWORD_FILE"), "{d}");
    }
}
