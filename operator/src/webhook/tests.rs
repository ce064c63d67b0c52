//! The webhook: real AdmissionReviews (pods from k8s-openapi types) through
//! `review`, the patches applied and the pods validated strictly, and the
//! TLS server with its certificate renewed under it.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

use super::*;
use crate::fixtures::{Proxy, pod};
use crate::render;

/// McpProxies by namespace and name; `down` answers every lookup with an
/// error, as an API server that cannot be reached.
#[derive(Default)]
struct Map {
    proxies: HashMap<(String, String), McpProxy>,
    down: bool,
}

impl Map {
    fn with(proxies: impl IntoIterator<Item = McpProxy>) -> Self {
        Self {
            proxies: proxies
                .into_iter()
                .map(|p| ((p.namespace().unwrap_or_default(), p.name_any()), p))
                .collect(),
            down: false,
        }
    }
}

impl Lookup for Map {
    async fn proxy(&self, ns: &str, name: &str) -> kube::Result<Option<McpProxy>> {
        if self.down {
            return Err(kube::Error::Service("connection refused".into()));
        }
        Ok(self.proxies.get(&(ns.to_owned(), name.to_owned())).cloned())
    }
}

/// An AdmissionReview of `operation` on `pod` in namespace `tools`, as the
/// API server sends it.
fn review_of(pod: &Pod, operation: &str) -> Vec<u8> {
    let gvk = json!({"group": "", "version": "v1", "kind": "Pod"});
    let gvr = json!({"group": "", "version": "v1", "resource": "pods"});
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": "tools",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .unwrap()
}

struct Reviewed {
    response: kube::core::admission::AdmissionResponse,
    /// The pod with the answer's patch applied.
    pod: Value,
}

async fn admit(lookup: &Map, pod: &Pod, operation: &str) -> Reviewed {
    let metrics = Metrics::default();
    let answer = review(
        &review_of(pod, operation),
        lookup,
        &Admission::lenient(Defaults::default()),
        &metrics,
    )
    .await
    .unwrap();
    // As it goes over the wire, and back.
    let wire: AdmissionReview<DynamicObject> =
        serde_json::from_slice(&serde_json::to_vec(&answer).unwrap()).unwrap();
    let response = wire.response.unwrap();
    assert_eq!(response.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(response.allowed, "pods are never denied: {response:?}");
    let mut patched = serde_json::to_value(pod).unwrap();
    if let Some(patch) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(patch).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    Reviewed {
        response,
        pod: patched,
    }
}

/// Admission under failurePolicy Fail.
fn strict() -> Admission {
    Admission {
        deny_without_sidecar: true,
        ..Admission::lenient(Defaults::default())
    }
}

/// An McpProxy whose config is valid and that is not accepted for `reason`.
fn not_accepted(reason: &str) -> McpProxy {
    Proxy::new()
        .status(
            &[("ConfigValid", "True", "Valid"), ("Accepted", "False", reason)],
            None,
        )
        .0
}

fn applied() -> McpProxy {
    Proxy::new()
        .status(
            &[("ConfigValid", "True", "Valid"), ("Accepted", "True", "Accepted")],
            None,
        )
        .0
}

#[tokio::test]
async fn a_labelled_pod_gets_the_sidecar_by_json_patch() {
    let lookup = Map::with([applied()]);
    let reviewed = admit(&lookup, &pod("p", None), "CREATE").await;
    assert_eq!(reviewed.response.warnings, None);
    let pod: Pod = serde_json::from_value(reviewed.pod).unwrap();
    assert!(inject::has_sidecar(&pod));
    let expected = crate::fixtures::pod("p", Some(&hash_of(&applied())));
    assert_eq!(pod, expected, "the patch gives the very pod `inject` makes");
}

fn hash_of(proxy: &McpProxy) -> String {
    render::config_yaml(&render::sidecar_config(proxy, &Defaults::default()))
        .unwrap()
        .1
}

#[tokio::test]
async fn without_an_applied_mcpproxy_the_pod_is_admitted_marked_and_warned() {
    let invalid = Proxy::new()
        .status(&[("ConfigValid", "False", "InvalidSpec")], None)
        .0;
    let conflict = Proxy::new()
        .status(
            &[
                ("ConfigValid", "True", "Valid"),
                ("Accepted", "False", "Conflict"),
            ],
            None,
        )
        .0;
    let mut deleting = applied();
    deleting.metadata.deletion_timestamp = Proxy::new().deleting().0.metadata.deletion_timestamp;
    for (lookup, says) in [
        (Map::default(), "McpProxy tools/weather not found"),
        (Map::with([invalid]), "is not applied: InvalidSpec"),
        (Map::with([conflict]), "is not applied: Conflict"),
        (Map::with([deleting]), "is being deleted"),
    ] {
        let reviewed = admit(&lookup, &pod("p", None), "CREATE").await;
        let warnings = reviewed.response.warnings.unwrap();
        assert!(warnings[0].starts_with("shadowcat: no sidecar: "), "{warnings:?}");
        assert!(warnings[0].contains(says), "{warnings:?} should say {says}");
        assert_only_marked(&reviewed.pod, &pod("p", None), says);
    }
}

/// `patched` is `original` with the `shadowcat.dev/skipped` annotation
/// saying `says`, and nothing else.
fn assert_only_marked(patched: &Value, original: &Pod, says: &str) {
    let why = patched["metadata"]["annotations"][inject::SKIPPED]
        .as_str()
        .unwrap();
    assert!(why.contains(says), "{why} should say {says}");
    let mut unmarked = patched.clone();
    unmarked["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("annotations");
    assert_eq!(unmarked, serde_json::to_value(original).unwrap());
}

/// Under failurePolicy Fail the operator refuses, rather than admits, a
/// pod it cannot give the sidecar: one that opted in never runs without its
/// front door. The ReplicaSet retries, and the pod is created once fixed.
#[tokio::test]
async fn strict_admission_refuses_a_pod_it_cannot_inject() {
    let strict = strict();
    let metrics = Metrics::default();
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &Map::default(),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    let response = answer.response.unwrap();
    assert!(!response.allowed);
    assert_eq!(response.patch, None);
    assert!(
        response
            .result
            .message
            .contains("McpProxy tools/weather not found"),
        "{}",
        response.result.message
    );
    assert!(metrics.encode().contains("outcome=\"denied_no_proxy\"} 1"));
    // What it can inject, it injects.
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &Map::with([applied()]),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    assert!(answer.response.unwrap().patch.is_some());
}

/// Under Fail too, a pod whose McpProxy is being deleted is created
/// without the sidecar (that front door goes on purpose, and the workload
/// must go on); one whose spec changed since its ConfigMap was written
/// waits for the reconcile (its container and config would disagree); an
/// invalid policy does not stop injection (the ConfigMap keeps the last
/// good one).
#[tokio::test]
async fn strict_admission_lets_a_deletion_through_and_waits_for_a_reconcile() {
    let strict = strict();
    let metrics = Metrics::default();
    let mut deleting = applied();
    deleting.metadata.deletion_timestamp = Proxy::new().deleting().0.metadata.deletion_timestamp;
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &Map::with([deleting]),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    let response = answer.response.unwrap();
    assert!(response.allowed, "{response:?}");
    assert!(response.warnings.unwrap()[0].contains("is being deleted"));

    let mut changed = applied();
    changed.spec.listen.port = 8181;
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &Map::with([changed]),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    let response = answer.response.unwrap();
    assert!(!response.allowed);
    assert!(
        response
            .result
            .message
            .contains("changed since its ConfigMap was written"),
        "{}",
        response.result.message
    );

    let policy_typo = Proxy::new()
        .status(
            &[
                ("ConfigValid", "False", "InvalidPolicy"),
                ("Accepted", "True", "Accepted"),
            ],
            None,
        )
        .0;
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &Map::with([policy_typo]),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    assert!(
        answer.response.unwrap().patch.is_some(),
        "an invalid policy does not block the sidecar"
    );
}

/// A pod from a template that still carries the sidecar an earlier
/// operator version wrote into it runs as it is until the handover.
#[tokio::test]
async fn a_pod_with_the_earlier_versions_sidecar_is_admitted_as_it_is() {
    let mut legacy = pod("p", None);
    legacy.spec.as_mut().unwrap().containers.push(Container {
        name: "shadowcat".into(),
        image: Some("shadowcat:0.0.9".into()),
        ..Default::default()
    });
    legacy
        .annotations_mut()
        .insert("shadowcat.dev/config-hash".into(), "0ld".into());
    let strict = strict();
    let metrics = Metrics::default();
    let answer = review(
        &review_of(&legacy, "CREATE"),
        &Map::with([applied()]),
        &strict,
        &metrics,
    )
    .await
    .unwrap();
    let response = answer.response.unwrap();
    assert!(response.allowed && response.patch.is_none(), "{response:?}");
    assert!(inject::has_legacy_sidecar(&legacy));
}

/// The pod mounts the ConfigMap as the last reconcile wrote it: the
/// annotation names status's hash, not the hash of a spec changed since;
/// a McpProxy never reconciled gets no sidecar (its ConfigMap may not exist).
#[tokio::test]
async fn the_config_hash_is_the_one_the_config_map_holds() {
    let mut changed = applied();
    changed.spec.replay.retention = Some("20m".into());
    assert_ne!(hash_of(&changed), hash_of(&applied()));
    let reviewed = admit(&Map::with([changed]), &pod("p", None), "CREATE").await;
    assert_eq!(
        reviewed.pod["metadata"]["annotations"]["shadowcat.dev/config-hash"],
        json!(hash_of(&applied()))
    );
    let mut fresh = applied();
    fresh.status = None;
    let reviewed = admit(&Map::with([fresh]), &pod("p", None), "CREATE").await;
    assert_only_marked(&reviewed.pod, &pod("p", None), "has not been reconciled yet");
}

/// Problems that leave the sidecar whole (a Service or NetworkPolicy that
/// could not be applied, a rollout annotation owned elsewhere) do not keep
/// it from pods.
#[tokio::test]
async fn side_problems_do_not_keep_the_sidecar_from_pods() {
    for reason in [
        "ServiceNotOwned",
        "NetworkPolicyNotOwned",
        "RolloutConflict",
        "ApiRejected",
    ] {
        let proxy = not_accepted(reason);
        let reviewed = admit(&Map::with([proxy]), &pod("p", None), "CREATE").await;
        let pod: Pod = serde_json::from_value(reviewed.pod).unwrap();
        assert!(inject::has_sidecar(&pod), "{reason}");
    }
    for reason in [
        "Conflict",
        "ImageNotAllowed",
        "ConfigMapNotOwned",
        "ConfigMapRejected",
    ] {
        let proxy = not_accepted(reason);
        let reviewed = admit(&Map::with([proxy]), &pod("p", None), "CREATE").await;
        assert_only_marked(&reviewed.pod, &pod("p", None), reason);
    }
}

#[tokio::test]
async fn a_pod_with_a_container_named_like_ours_is_admitted_without_the_sidecar() {
    let mut own = pod("p", None);
    own.spec.as_mut().unwrap().containers.push(Container {
        name: "shadowcat".into(),
        image: Some("theirs:1".into()),
        ..Default::default()
    });
    let reviewed = admit(&Map::with([applied()]), &own, "CREATE").await;
    assert_only_marked(&reviewed.pod, &own, "already has a container named");
    assert!(reviewed.response.warnings.unwrap()[0].contains("already has a container named"));
}

#[tokio::test]
async fn only_creates_of_labelled_pods_are_touched() {
    let lookup = Map::with([applied()]);
    let reviewed = admit(&lookup, &pod("p", None), "UPDATE").await;
    assert_eq!(
        (reviewed.response.patch, reviewed.response.warnings),
        (None, None)
    );
    let mut unlabelled = pod("p", None);
    unlabelled.metadata.labels = None;
    let reviewed = admit(&lookup, &unlabelled, "CREATE").await;
    assert_eq!(
        (reviewed.response.patch, reviewed.response.warnings),
        (None, None)
    );
}

#[tokio::test]
async fn an_unreadable_mcpproxy_is_a_500_so_the_failure_policy_decides() {
    let down = Map {
        down: true,
        ..Map::default()
    };
    let metrics = Metrics::default();
    let answer = review(
        &review_of(&pod("p", None), "CREATE"),
        &down,
        &Admission::lenient(Defaults::default()),
        &metrics,
    )
    .await;
    let why = answer.unwrap_err();
    assert!(why.contains("cannot read McpProxy tools/weather"), "{why}");
    assert!(
        metrics
            .encode()
            .contains("shadowcat_operator_admissions_total{outcome=\"error\"} 1")
    );
}

#[tokio::test]
async fn garbage_is_an_invalid_review_not_a_panic() {
    let metrics = Metrics::default();
    for body in [
        &b"{"[..],
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
    ] {
        let answer = review(
            body,
            &Map::default(),
            &Admission::lenient(Defaults::default()),
            &metrics,
        )
        .await
        .unwrap();
        let response = answer.response.unwrap();
        assert!(!response.allowed);
        assert_eq!(response.result.reason, "InvalidRequest");
    }
}

/// Every pod the webhook makes (from a matrix of McpProxies and pods), and
/// every object the operator renders, passes the Kubernetes schemas offline
/// (strict: an unknown field fails); so do the examples, the McpProxy ones
/// against the CRD. Uses the pinned validator `tests/chart/install.sh` sets up.
#[tokio::test]
async fn injected_pods_and_rendered_objects_pass_the_kubernetes_schemas() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("tests/chart/.venv/bin/python");
    assert!(
        python.exists(),
        "run tests/chart/install.sh first (scripts/test.sh does)"
    );
    let defaults = Defaults::default();
    let mut docs = Vec::new();
    let mut graced = pod("graced", None);
    graced.spec.as_mut().unwrap().termination_grace_period_seconds = Some(120);
    for fixture in [
        Proxy::named("weather"),
        Proxy::named("weather").redis().service().network_policy(),
        Proxy::named("weather").stateful().overrides(),
        Proxy::named("weather").redis().auth(),
        Proxy::named("weather").auth().introspection().token_exchange(),
        Proxy::named("weather").redis().auth().policy(),
    ]
    .into_iter()
    .enumerate()
    {
        let (i, fixture) = fixture;
        let from = docs.len();
        let proxy = fixture
            .status(
                &[("ConfigValid", "True", "Valid"), ("Accepted", "True", "Accepted")],
                None,
            )
            .0;
        let (yaml, _) = render::config_yaml(&render::sidecar_config(&proxy, &defaults)).unwrap();
        docs.push(serde_json::to_value(render::config_map(&proxy, &yaml)).unwrap());
        docs.extend(render::service(&proxy).map(|s| serde_json::to_value(s).unwrap()));
        docs.extend(render::network_policy(&proxy).map(|n| serde_json::to_value(n).unwrap()));
        let lookup = Map::with([proxy]);
        for original in [pod("plain", None), graced.clone()] {
            let mut reviewed = admit(&lookup, &original, "CREATE").await;
            assert!(reviewed.response.patch.is_some());
            reviewed.pod["apiVersion"] = json!("v1");
            reviewed.pod["kind"] = json!("Pod");
            docs.push(reviewed.pod);
        }
        // One name per fixture: the validator refuses duplicates.
        for doc in &mut docs[from..] {
            let name = format!("{}-{i}", doc["metadata"]["name"].as_str().unwrap());
            doc["metadata"]["name"] = json!(name);
        }
    }
    let rendered = std::env::temp_dir().join(format!("shadowcat-injected-{}.yaml", std::process::id()));
    let text: Vec<String> = docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect();
    std::fs::write(&rendered, text.join("\n---\n")).unwrap();
    // The McpProxy examples are alternatives of one name: one run each.
    let mut reports = Vec::new();
    for (i, example) in [
        "examples/mcpproxy.yaml",
        "examples/mcpproxy-auth.yaml",
        "examples/mcpproxy-token-exchange.yaml",
        "examples/mcpproxy-policy.yaml",
    ]
    .into_iter()
    .enumerate()
    {
        let mut command = std::process::Command::new(&python);
        command
            .arg(root.join("tests/chart/validate_manifests.py"))
            .args(["-k", "1.33", "-k", "1.37", "--crd"])
            .arg(root.join("charts/shadowcat/files/crds/mcpproxies.yaml"))
            .arg(root.join(example));
        if i == 0 {
            command
                .arg(&rendered)
                .args(["examples/redis.yaml", "examples/mcp-server.yaml"].map(|e| root.join(e)));
        }
        let output = command.output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{report}");
        assert!(report.contains("0 failed"), "{report}");
        reports.push(report);
    }
    let _ = std::fs::remove_file(&rendered);
    let report = reports.join("\n");
    assert_eq!(docs.iter().filter(|d| d["kind"] == "Pod").count(), 12, "{report}");
}

mod tls;
