//! The Helm chart, offline: `tests/chart/validate.sh` (helm lint, helm
//! template and schema validation of every rendered object, for the default
//! values and each `tests/chart/values/*.yaml`), and the default render's
//! objects and RBAC (least privilege: no "*" anywhere in a rule).

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

/// `helm template` with the chart's default values, as JSON objects.
fn render_default() -> Vec<Value> {
    install();
    let helm_home = std::env::temp_dir().join("shadowcat-chart-test-helm");
    let out = Command::new(tools().join("bin/helm"))
        .args(["template", "shadowcat", CHART, "--namespace", "shadowcat-system"])
        .env("HELM_CONFIG_HOME", helm_home.join("config"))
        .env("HELM_CACHE_HOME", helm_home.join("cache"))
        .env("HELM_DATA_HOME", helm_home.join("data"))
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm template failed\n{}", text(&out));

    // YAML -> JSON with the validator venv's PyYAML (no YAML crate here).
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
        stdin.write_all(&out.stdout).unwrap();
    }
    let json = python.wait_with_output().unwrap();
    assert!(json.status.success(), "YAML -> JSON failed\n{}", text(&json));
    serde_json::from_slice::<Vec<Value>>(&json.stdout).unwrap()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
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

    // Least privilege: no wildcard verb, resource or API group in any rule
    // of any ClusterRole or Role, and every rule names its verbs.
    for role in objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
    {
        let name = role["metadata"]["name"].as_str().unwrap();
        let rules = role["rules"].as_array().unwrap();
        assert!(!rules.is_empty(), "{name} has no rules");
        for rule in rules {
            for field in ["verbs", "resources", "apiGroups", "nonResourceURLs"] {
                let wildcard = rule[field]
                    .as_array()
                    .is_some_and(|v| v.iter().any(|x| x.as_str().unwrap().contains('*')));
                assert!(!wildcard, "{name} grants \"*\" in {field}: {rule}");
            }
            assert!(
                rule["verbs"].as_array().is_some_and(|v| !v.is_empty()),
                "{name} has a rule without verbs: {rule}"
            );
        }
    }
}
