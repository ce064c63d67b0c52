//! The Helm chart, offline: `tests/chart/validate.sh` (helm lint, helm
//! template and schema validation of every rendered object, for the default
//! values and each `tests/chart/values/*.yaml`), the rendered objects and
//! RBAC (least privilege: no "*" anywhere in a rule, Secrets only where the
//! operator needs them), and the admission webhook's scope.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed assertion

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use shadowcat_tests::root;

const CHART: &str = "charts/shadowcat";

fn tools() -> PathBuf {
    root().join("tests/chart")
}

/// Runs `tests/chart/install.sh` once per test binary (it is idempotent,
/// quick when done, and takes a lock against concurrent runs).
fn install() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(tools().join("install.sh")).output().unwrap();
        assert!(
            out.status.success(),
            "tests/chart/install.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

fn text(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The values cases `validate.sh` runs by default: `values/<file name>`.
fn values_cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(tools().join("values"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("values/{n}"))
        .collect();
    cases.sort();
    cases
}

#[test]
fn chart_lints_renders_and_validates_offline() {
    install();
    let out = Command::new(tools().join("validate.sh"))
        .arg(CHART)
        .current_dir(root())
        .output()
        .unwrap();
    let report = text(&out);
    assert!(out.status.success(), "validate.sh failed\n{report}");

    let cases = values_cases();
    assert!(cases.len() >= 2, "expected values files in tests/chart/values");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for case in ["default", "crds"]
        .into_iter()
        .chain(cases.iter().map(String::as_str))
    {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.split_whitespace().nth(1) == Some(case)),
            "no passing line for case {case}\n{report}"
        );
    }
    assert!(
        stdout.contains(&format!("chart: {} passed, 0 failed", cases.len() + 2)),
        "{report}"
    );
}

/// The values case that turns on cert-manager and serves two namespaces.
const CERT_MANAGER_CASE: &str = "webhook-certmanager.yaml";

/// `helm template` with the chart's default values, as JSON objects.
fn render_default() -> Vec<Value> {
    render(None)
}

/// `helm template` as JSON objects: the chart's values, overridden by
/// `tests/chart/values/<case>` when there is a case.
fn render(case: Option<&str>) -> Vec<Value> {
    install();
    let helm_home = std::env::temp_dir().join("shadowcat-chart-test-helm");
    let mut helm = Command::new(tools().join("bin/helm"));
    helm.args(["template", "shadowcat", CHART, "--namespace", "shadowcat-system"]);
    if let Some(case) = case {
        helm.arg("--values").arg(tools().join("values").join(case));
    }
    let out = helm
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {case:?} failed\n{}",
        text(&out)
    );
    yaml_to_json(&out.stdout)
}

/// The values a case sets on top of the chart's: `tests/chart/values/<case>`,
/// or the chart's `values.yaml` itself when there is no case.
fn values(case: Option<&str>) -> Value {
    let path = match case {
        Some(case) => tools().join("values").join(case),
        None => root().join(CHART).join("values.yaml"),
    };
    let yaml = std::fs::read(&path).unwrap();
    yaml_to_json(&yaml).into_iter().next().unwrap()
}

/// Every YAML document in `yaml` as JSON, with the validator venv's PyYAML
/// (no YAML crate here).
fn yaml_to_json(yaml: &[u8]) -> Vec<Value> {
    let mut python = Command::new(tools().join(".venv/bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; \
             json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = python.stdin.take().unwrap();
        stdin.write_all(yaml).unwrap();
    }
    let json = python.wait_with_output().unwrap();
    assert!(json.status.success(), "YAML -> JSON failed\n{}", text(&json));
    serde_json::from_slice::<Vec<Value>>(&json.stdout).unwrap()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// Every rule of every Role and ClusterRole, beside the role holding it.
fn rules(objects: &[Value]) -> Vec<(&Value, &Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .flat_map(|role| {
            role["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |rule| (role, rule))
        })
        .collect()
}

/// A rule's list field (`verbs`, `resources`, `resourceNames`, ...); empty
/// when the rule has none.
fn strings<'a>(rule: &'a Value, field: &str) -> Vec<&'a str> {
    rule[field]
        .as_array()
        .map(|items| items.iter().map(|x| x.as_str().unwrap()).collect())
        .unwrap_or_default()
}

fn grants(rule: &Value, resource: &str) -> bool {
    strings(rule, "resources").contains(&resource)
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

/// No wildcard verb, resource or API group in any rule of any ClusterRole
/// or Role, and every rule names its verbs.
fn assert_no_wildcards(objects: &[Value]) {
    for (role, rule) in rules(objects) {
        let name = name(role);
        for field in ["verbs", "resources", "apiGroups", "nonResourceURLs"] {
            assert!(
                !strings(rule, field).iter().any(|x| x.contains('*')),
                "{name} grants \"*\" in {field}: {rule}"
            );
        }
        assert!(
            !strings(rule, "verbs").is_empty(),
            "{name} has a rule without verbs: {rule}"
        );
    }
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        assert!(
            role["rules"].as_array().is_some_and(|r| !r.is_empty()),
            "{} has no rules",
            name(role)
        );
    }
}

#[test]
fn default_render_has_the_operator_objects_with_least_privilege_rbac() {
    let objects = render_default();
    let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in [
        "Deployment",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(kinds.contains(&kind), "no {kind} rendered; got {kinds:?}");
    }

    // The Deployment runs as the rendered ServiceAccount, which the
    // ClusterRoleBinding binds to the rendered ClusterRole.
    let sa = of_kind(&objects, "ServiceAccount")[0];
    let sa_name = &sa["metadata"]["name"];
    let deployment = of_kind(&objects, "Deployment")[0];
    assert_eq!(
        &deployment["spec"]["template"]["spec"]["serviceAccountName"], sa_name,
        "Deployment does not use the chart's ServiceAccount"
    );
    let cluster_roles = of_kind(&objects, "ClusterRole");
    for binding in of_kind(&objects, "ClusterRoleBinding") {
        assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
        assert!(
            cluster_roles
                .iter()
                .any(|r| r["metadata"]["name"] == binding["roleRef"]["name"]),
            "ClusterRoleBinding refers to a ClusterRole the chart does not render: {binding}"
        );
        assert!(
            binding["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount" && &s["name"] == sa_name && s["namespace"] == "shadowcat-system"
            }),
            "ClusterRoleBinding does not bind the chart's ServiceAccount: {binding}"
        );
    }

    assert_no_wildcards(&objects);

    // Secrets, in the default (self-managed TLS, every namespace) mode: the
    // watched set's ClusterRole may get the Secrets an McpProxy names and
    // create the peer Secret, but never list or watch them; the release
    // namespace's Role gets and updates the webhook's TLS Secret by name and
    // creates it (a create cannot be restricted by name). Nothing else.
    let mut tls_secret_by_name = false;
    for (role, rule) in rules(&objects).into_iter().filter(|(_, r)| grants(r, "secrets")) {
        let verbs = strings(rule, "verbs");
        let names = strings(rule, "resourceNames");
        if role["kind"] == "ClusterRole" {
            // The watched set's role: the one that also grants what the
            // operator makes for an McpProxy.
            assert!(
                rules(std::slice::from_ref(role))
                    .iter()
                    .any(|(_, r)| grants(r, "configmaps")),
                "{} grants secrets cluster-wide outside the watched set's role: {rule}",
                name(role)
            );
            assert!(
                verbs.iter().all(|v| ["get", "create"].contains(v)),
                "{} lets the operator read Secrets it was not told about: {rule}",
                name(role)
            );
        } else {
            assert_eq!(
                (name(role), role["metadata"]["namespace"].as_str()),
                ("shadowcat-self", Some("shadowcat-system")),
                "secrets granted by an unexpected Role: {rule}"
            );
            if names.is_empty() {
                assert_eq!(
                    verbs,
                    ["create"],
                    "Secrets readable in the release namespace: {rule}"
                );
            } else {
                assert_eq!(names, ["shadowcat-webhook-tls"], "{rule}");
                assert!(verbs.iter().all(|v| ["get", "update"].contains(v)), "{rule}");
                tls_secret_by_name = true;
            }
        }
    }
    assert!(
        tls_secret_by_name,
        "no rule lets the operator keep its webhook TLS Secret (get, update by name)"
    );

    // The webhook configuration: only the chart's own, only get and update
    // (the operator keeps its caBundle current).
    let configuration = name(of_kind(&objects, "MutatingWebhookConfiguration")[0]);
    let webhook_rules: Vec<_> = rules(&objects)
        .into_iter()
        .filter(|(_, r)| grants(r, "mutatingwebhookconfigurations"))
        .collect();
    assert_eq!(
        webhook_rules.len(),
        1,
        "expected one rule on mutatingwebhookconfigurations"
    );
    let (role, rule) = webhook_rules[0];
    assert_eq!(role["kind"], "ClusterRole", "{rule}");
    assert_eq!(
        strings(rule, "resources"),
        ["mutatingwebhookconfigurations"],
        "{rule}"
    );
    assert_eq!(strings(rule, "resourceNames"), [configuration], "{rule}");
    let mut verbs = strings(rule, "verbs");
    verbs.sort_unstable();
    assert_eq!(verbs, ["get", "update"], "{rule}");
}

#[test]
fn cert_manager_render_grants_secrets_only_in_each_watched_namespace() {
    let objects = render(Some(CERT_MANAGER_CASE));
    assert_no_wildcards(&objects);
    let values = values(Some(CERT_MANAGER_CASE));
    let watched: Vec<&str> = values["watchNamespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        watched.len() >= 2,
        "{CERT_MANAGER_CASE} should watch two namespaces"
    );

    // Nothing cluster-wide: cert-manager keeps the certificate and its
    // cainjector the caBundle, and the watched set is namespaced.
    for (role, rule) in rules(&objects) {
        if role["kind"] == "ClusterRole" {
            for resource in ["secrets", "mutatingwebhookconfigurations"] {
                assert!(
                    !grants(rule, resource),
                    "ClusterRole {} grants {resource}: {rule}",
                    name(role)
                );
            }
        }
        if grants(rule, "secrets") {
            let namespace = role["metadata"]["namespace"].as_str().unwrap_or_default();
            assert!(
                watched.contains(&namespace),
                "{} grants secrets outside the watched namespaces: {rule}",
                name(role)
            );
        }
    }

    // Each watched namespace: the operator's Role, bound to its ServiceAccount.
    let sa_name = name(of_kind(&objects, "ServiceAccount")[0]);
    let roles = of_kind(&objects, "Role");
    let bindings = of_kind(&objects, "RoleBinding");
    for namespace in watched {
        let role = roles
            .iter()
            .find(|r| r["metadata"]["namespace"] == namespace && name(r) == "shadowcat")
            .unwrap_or_else(|| panic!("no Role shadowcat in watched namespace {namespace}"));
        let granted: Vec<&str> = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| strings(r, "resources"))
            .collect();
        for resource in [
            "mcpproxies",
            "configmaps",
            "services",
            "secrets",
            "pods",
            "deployments",
        ] {
            assert!(
                granted.contains(&resource),
                "the Role in {namespace} lacks {resource}: {role}"
            );
        }
        let binding = bindings
            .iter()
            .find(|b| b["metadata"]["namespace"] == namespace && b["roleRef"]["name"] == name(role))
            .unwrap_or_else(|| panic!("no RoleBinding for the Role in {namespace}"));
        assert_eq!(binding["roleRef"]["kind"], "Role");
        assert!(
            binding["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == sa_name && s["namespace"] == "shadowcat-system"
            }),
            "the RoleBinding in {namespace} does not bind the chart's ServiceAccount: {binding}"
        );
    }
    // One right outside the watched namespaces: an McpProxy's finalizer can
    // be removed even after a namespace being deleted lost the Role.
    let finalizers: Vec<&Value> = of_kind(&objects, "ClusterRole")
        .into_iter()
        .filter(|r| name(r).ends_with("-finalizers"))
        .collect();
    assert_eq!(finalizers.len(), 1, "a ClusterRole for finalizers");
    assert_eq!(
        finalizers[0]["rules"],
        serde_json::json!([{"apiGroups": ["shadowcat.dev"], "resources": ["mcpproxies"], "verbs": ["get", "patch"]}])
    );
}

#[test]
fn webhook_sees_only_labelled_pod_creates_with_the_failure_policy_from_values() {
    for case in [None, Some(CERT_MANAGER_CASE)] {
        let objects = render(case);
        let case_values = values(case);
        let failure_policy = case_values["webhook"]["failurePolicy"].as_str().unwrap();
        let configurations = of_kind(&objects, "MutatingWebhookConfiguration");
        assert_eq!(
            configurations.len(),
            1,
            "{case:?}: one MutatingWebhookConfiguration"
        );
        let configuration = configurations[0];
        let webhooks = configuration["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 1, "{case:?}: one webhook: {configuration}");
        let webhook = &webhooks[0];
        assert_eq!(webhook["name"], "inject.shadowcat.dev", "{case:?}");
        assert_eq!(webhook["failurePolicy"], failure_policy, "{case:?}");
        assert_eq!(webhook["sideEffects"], "None", "{case:?}");

        // Pod CREATE and nothing else.
        let admission_rules = webhook["rules"].as_array().unwrap();
        assert_eq!(admission_rules.len(), 1, "{case:?}: one rule: {webhook}");
        for (field, only) in [
            ("operations", "CREATE"),
            ("apiGroups", ""),
            ("apiVersions", "v1"),
            ("resources", "pods"),
        ] {
            assert_eq!(
                strings(&admission_rules[0], field),
                [only],
                "{case:?}: rule {field}: {webhook}"
            );
        }
        // Only pods that opted in, and never the operator's own namespace.
        assert_eq!(
            webhook["objectSelector"],
            serde_json::json!({
                "matchExpressions": [{"key": "shadowcat.dev/proxy", "operator": "Exists"}]
            }),
            "{case:?}"
        );
        let excluded: Vec<&str> = webhook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strings(e, "values"))
            .collect();
        for namespace in ["shadowcat-system", "kube-system"] {
            assert!(
                excluded.contains(&namespace),
                "{case:?}: {namespace} not excluded: {webhook}"
            );
        }

        // Called through the chart's webhook Service, which reaches the
        // operator's webhook port.
        let service = &webhook["clientConfig"]["service"];
        assert_eq!(service["namespace"], "shadowcat-system", "{case:?}");
        assert_eq!(service["path"], "/mutate", "{case:?}");
        assert_eq!(service["port"], 443, "{case:?}");
        assert!(
            of_kind(&objects, "Service").iter().any(|s| {
                s["metadata"]["name"] == service["name"]
                    && s["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["port"] == 443 && p["targetPort"] == "webhook")
            }),
            "{case:?}: no Service {} with port 443 -> webhook",
            service["name"]
        );

        // The chart never sets caBundle: the operator or cert-manager's
        // cainjector does, and helm upgrade leaves it alone.
        assert!(
            webhook["clientConfig"].get("caBundle").is_none(),
            "{case:?}: the chart sets caBundle"
        );
        let inject_ca_from = &configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"];
        if case_values["webhook"]["certManager"]["enabled"] == true {
            assert_eq!(inject_ca_from, "shadowcat-system/shadowcat-webhook", "{case:?}");
            assert!(
                of_kind(&objects, "Certificate")
                    .iter()
                    .any(|c| name(c) == "shadowcat-webhook"),
                "{case:?}: no Certificate for cainjector to read"
            );
        } else {
            assert!(
                inject_ca_from.is_null(),
                "{case:?}: cainjector asked without cert-manager"
            );
        }
    }
}

/// An allow-list entry must end where a repository or tag does (`/`, `:`
/// or `@`): a bare `…/shadowcat` would also allow `…/shadowcat-evil`. The
/// schema refuses it; one that ends right renders, with the env the
/// operator enforces the same list by.
#[test]
fn allowed_images_must_end_at_a_boundary() {
    install();
    let helm_home = std::env::temp_dir().join("shadowcat-chart-test-helm");
    let template = |prefix: &str| {
        Command::new(tools().join("bin/helm"))
            .args(["template", "shadowcat", CHART, "--namespace", "shadowcat-system"])
            .args(["--kube-version", "1.33.0"])
            .arg("--set")
            .arg(format!("sidecar.allowedImages={{{prefix}}}"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_DATA_HOME", helm_home.join("data"))
            .current_dir(root())
            .output()
            .unwrap()
    };
    let bare = template("shadowcat");
    assert!(!bare.status.success(), "{}", text(&bare));
    assert!(text(&bare).contains("allowedImages"), "{}", text(&bare));
    let bounded = template("shadowcat:");
    assert!(bounded.status.success(), "{}", text(&bounded));
    let objects = yaml_to_json(&bounded.stdout);
    let operator = of_kind(&objects, "Deployment")[0];
    let env = &operator["spec"]["template"]["spec"]["containers"][0]["env"];
    let allowed = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHADOWCAT_ALLOWED_IMAGES")
        .unwrap();
    assert_eq!(allowed["value"], "shadowcat:");
    assert_eq!(of_kind(&objects, "ValidatingAdmissionPolicy").len(), 1);
}
