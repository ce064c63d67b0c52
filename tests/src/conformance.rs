//! The official conformance suite's server scenarios, run by
//! `tests/peers/run-conformance.mjs` against a URL.

use std::collections::BTreeMap;

use crate::root;

/// Runs the conformance suite's active server scenarios against `url`:
/// scenario name -> passed.
/// Each scenario's outcome: `None` when it passed, else what failed.
pub async fn run(url: &str) -> BTreeMap<String, Option<String>> {
    let script = root().join("tests/peers/run-conformance.mjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .args(["--url", url])
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "conformance suite could not run: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let failed = (!s["passed"].as_bool().unwrap()).then(|| s["detail"].to_string());
            (s["name"].as_str().unwrap().to_owned(), failed)
        })
        .collect()
}

/// The scenarios that failed, each with what the suite said.
pub fn failing(results: &BTreeMap<String, Option<String>>) -> Vec<String> {
    results
        .iter()
        .filter_map(|(name, failed)| Some(format!("{name}: {}", failed.as_ref()?)))
        .collect()
}
