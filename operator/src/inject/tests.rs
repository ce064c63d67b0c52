//! The webhook's mutation, rule by rule, on pods built from k8s-openapi types.

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Lifecycle, LifecycleHandler, SleepAction, Volume,
};

use super::*;
use crate::fixtures::{Proxy, pod};

fn injected(injection: Injection) -> (Pod, Vec<String>) {
    match injection {
        Injection::Injected { pod, warnings } => (*pod, warnings),
        other => panic!("expected the sidecar, got {other:?}"),
    }
}

fn refused(injection: Injection) -> String {
    match injection {
        Injection::Refused(why) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().unwrap()
}

#[test]
fn the_sidecar_is_a_native_sidecar_and_the_server_drains_it_first() {
    let proxy = Proxy::new().0;
    let (pod, warnings) = injected(inject(&pod("p", None), &proxy, &Defaults::default(), "h1"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let spec = spec(&pod);
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(sidecar.name, CONTAINER);
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers.len(),
        1,
        "the server's containers are left as they are"
    );
    let hook = spec.containers[0]
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.http_get.as_ref())
        .expect("a preStop on the server");
    assert_eq!(hook.path.as_deref(), Some("/drain"));
    assert_eq!(hook.port, IntOrString::Int(15201));
    let header = &hook.http_headers.as_ref().unwrap()[0];
    assert_eq!((header.name.as_str(), header.value.as_str()), DRAIN_HEADER);
    assert_eq!(
        spec.termination_grace_period_seconds,
        Some(35),
        "raised from the default 30"
    );
    let names: Vec<&str> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["shadowcat-config"]);
    assert_eq!(pod.annotations()[INJECTED], "weather");
    assert_eq!(pod.annotations()[CONFIG_HASH], "h1");
    assert!(has_sidecar(&pod));
    assert!(!has_sidecar(&crate::fixtures::pod("q", None)));
}

#[test]
fn the_grace_period_is_raised_never_lowered() {
    let proxy = Proxy::new().0;
    for (set, expected) in [(Some(10), 35), (Some(35), 35), (Some(600), 600), (None, 35)] {
        let mut p = pod("p", None);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = set;
        let (pod, _) = injected(inject(&p, &proxy, &Defaults::default(), "h"));
        assert_eq!(
            spec(&pod).termination_grace_period_seconds,
            Some(expected),
            "from {set:?}"
        );
    }
}

#[test]
fn the_server_is_the_container_on_the_upstream_port() {
    let proxy = Proxy::new().0;
    let mut p = pod("p", None);
    let helper = Container {
        name: "log-shipper".into(),
        image: Some("busybox".into()),
        ..Default::default()
    };
    p.spec.as_mut().unwrap().containers.insert(0, helper);
    let (pod, _) = injected(inject(&p, &proxy, &Defaults::default(), "h"));
    let containers = &spec(&pod).containers;
    assert_eq!(containers[0].lifecycle, None, "not the server");
    assert!(containers[1].lifecycle.as_ref().unwrap().pre_stop.is_some());
}

#[test]
fn a_prestop_of_the_users_own_is_kept_with_a_warning() {
    let proxy = Proxy::new().0;
    let mut p = pod("p", None);
    let own = Lifecycle {
        pre_stop: Some(LifecycleHandler {
            sleep: Some(SleepAction { seconds: 3 }),
            ..Default::default()
        }),
        ..Default::default()
    };
    p.spec.as_mut().unwrap().containers[0].lifecycle = Some(own.clone());
    let (pod, warnings) = injected(inject(&p, &proxy, &Defaults::default(), "h"));
    assert_eq!(spec(&pod).containers[0].lifecycle, Some(own));
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].contains("preStop hook of its own"), "{warnings:?}");
}

#[test]
fn a_container_or_volume_named_like_ours_is_refused_not_overwritten() {
    let proxy = Proxy::new().0;
    let mut p = pod("p", None);
    p.spec.as_mut().unwrap().containers.push(Container {
        name: "shadowcat".into(),
        image: Some("someone-elses:1".into()),
        ..Default::default()
    });
    let why = refused(inject(&p, &proxy, &Defaults::default(), "h"));
    assert!(
        why.contains("already has a container named \"shadowcat\""),
        "{why}"
    );

    let mut p = pod("p", None);
    p.spec.as_mut().unwrap().volumes = Some(vec![Volume {
        name: "shadowcat-config".into(),
        ..Default::default()
    }]);
    let why = refused(inject(&p, &proxy, &Defaults::default(), "h"));
    assert!(why.contains("volume named \"shadowcat-config\""), "{why}");
}

#[test]
fn a_port_the_sidecar_needs_in_use_is_refused_by_name() {
    let proxy = Proxy::new().0;
    let mut p = pod("p", None);
    p.spec.as_mut().unwrap().containers[0]
        .ports
        .as_mut()
        .unwrap()
        .push(ContainerPort {
            container_port: 8080,
            ..Default::default()
        });
    let why = refused(inject(&p, &proxy, &Defaults::default(), "h"));
    assert!(why.contains("container \"server\" uses port 8080"), "{why}");
}

#[test]
fn an_injected_pod_is_left_alone() {
    let proxy = Proxy::new().0;
    let (once, _) = injected(inject(&pod("p", None), &proxy, &Defaults::default(), "h"));
    assert!(matches!(
        inject(&once, &proxy, &Defaults::default(), "h"),
        Injection::Already
    ));
}

#[test]
fn pull_secrets_are_added_once_and_the_allow_list_holds() {
    let proxy = Proxy::new().0;
    let defaults = Defaults {
        image_pull_secrets: vec!["registry".into(), "mirror".into()],
        ..Defaults::default()
    };
    let mut p = pod("p", None);
    p.spec.as_mut().unwrap().image_pull_secrets = Some(vec![LocalObjectReference {
        name: "registry".into(),
    }]);
    let (pod, _) = injected(inject(&p, &proxy, &defaults, "h"));
    let names: Vec<&str> = spec(&pod)
        .image_pull_secrets
        .iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["registry", "mirror"]);

    let strict = Defaults {
        allowed_images: vec!["registry.example/".into()],
        ..Defaults::default()
    };
    let why = refused(inject(&pod_named("p"), &proxy, &strict, "h"));
    assert!(why.contains("\"shadowcat:latest\" starts with none of"), "{why}");
    let allowed = Proxy::new().overrides().0;
    injected(inject(&pod_named("p"), &allowed, &strict, "h"));
}

fn pod_named(name: &str) -> Pod {
    pod(name, None)
}
