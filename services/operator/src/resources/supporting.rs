//! The objects around the workloads: ServiceAccount, the collections ConfigMap, Services and
//! PodDisruptionBudgets.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{ConfigMap, Service, ServiceAccount, ServicePort, ServiceSpec},
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};

use super::{
    COLLECTIONS_KEY, Component, config_map_name, metadata, selector_labels, service_account_name,
};
use crate::crd::Courier;

/// The pods' identity; no token is mounted (Courier's services never call the Kubernetes API).
pub fn service_account(courier: &Courier) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(courier, service_account_name(courier), None),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

/// `collections.yaml`, mounted as a directory (not `subPath`) so the kubelet refreshes the file
/// in running api pods and the api reloads it without a restart.
pub fn config_map(courier: &Courier, collections_yaml: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(courier, config_map_name(courier), None),
        data: Some(BTreeMap::from([(COLLECTIONS_KEY.to_owned(), collections_yaml.to_owned())])),
        ..ConfigMap::default()
    }
}

/// ClusterIP Service on the component's port (the worker's only serves metrics).
pub fn service(courier: &Courier, component: Component) -> Service {
    Service {
        metadata: metadata(courier, component.object_name(courier), Some(component)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector_labels(courier, Some(component))),
            ports: Some(vec![ServicePort {
                name: Some(component.port_name().into()),
                port: component.port(),
                target_port: Some(IntOrString::String(component.port_name().into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one pod of a component voluntarily disrupted at a time (node drains, upgrades).
pub fn pod_disruption_budget(courier: &Courier, component: Component) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(courier, component.object_name(courier), Some(component)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(courier, Some(component))),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
