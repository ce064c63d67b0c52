//! The objects an McpProxy owns besides its ConfigMap: the Service in
//! front of its pods and their NetworkPolicy.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use shadowcat_crds::McpProxy;

use super::{MCP_PORT_NAME, config_map_name, owned_meta, pod_selector, redis, service_name};

/// The Service in front of the sidecar, if the McpProxy asks for one: it
/// selects the pods labelled for this McpProxy, on the sidecar's MCP port
/// (a pod created without the sidecar has no port of that name, so it gets
/// no traffic).
pub fn service(proxy: &McpProxy) -> Option<Service> {
    let spec = proxy.spec.service.as_ref()?;
    Some(Service {
        metadata: owned_meta(proxy, service_name(proxy)),
        spec: Some(K8sServiceSpec {
            selector: Some(pod_selector(proxy)),
            type_: spec.type_.map(|t| format!("{t:?}")),
            ports: Some(vec![ServicePort {
                name: Some("mcp".into()),
                port: i32::from(spec.port.unwrap_or(80)),
                target_port: Some(IntOrString::String(MCP_PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The NetworkPolicy of `proxy`'s pods, if it asks for one.
pub fn network_policy(proxy: &McpProxy) -> Option<NetworkPolicy> {
    let spec = proxy.spec.network_policy.as_ref()?;
    let selector = LabelSelector {
        match_labels: Some(pod_selector(proxy)),
        ..Default::default()
    };
    let port = |port: u16| NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let rule = |p: u16, from: Vec<NetworkPolicyPeer>| NetworkPolicyIngressRule {
        ports: Some(vec![port(p)]),
        from: (!from.is_empty()).then_some(from),
    };
    let mut ingress = vec![rule(proxy.spec.listen.port, spec.mcp_from.clone())];
    if !spec.admin_from.is_empty() {
        ingress.push(rule(proxy.spec.admin_port(), spec.admin_from.clone()));
    }
    if redis(proxy).is_some() {
        let siblings = NetworkPolicyPeer {
            pod_selector: Some(selector.clone()),
            ..Default::default()
        };
        ingress.push(rule(proxy.spec.peer_port(), vec![siblings]));
    }
    Some(NetworkPolicy {
        metadata: owned_meta(proxy, config_map_name(proxy)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(ingress),
            ..Default::default()
        }),
    })
}
