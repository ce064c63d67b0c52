//! Reloading the policy when the config file changes.

use std::sync::Arc;
use std::time::Duration;

use super::build;
use crate::metrics::ReloadLabels;

/// How often the config file is looked at for a new policy.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Watches the config file and puts each new valid policy in force. An
/// invalid one is refused with a log line naming the error, and the policy
/// in force stays. A file that is briefly missing (a ConfigMap's symlinks
/// being swapped) is skipped. Only `policy` reloads: other changes wait for
/// a restart, which the log says.
pub async fn watch_file(app: Arc<crate::app::App>, path: std::path::PathBuf) {
    let read = |text: &[u8]| -> Result<shadowcat_crds::SidecarConfig, String> {
        let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
        shadowcat_crds::SidecarConfig::from_yaml(text).map_err(|e| e.to_string())
    };
    let mut last_text = tokio::fs::read(&path).await.ok();
    let mut last = last_text.as_deref().and_then(|t| read(t).ok());
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(text) = tokio::fs::read(&path).await else {
            continue;
        };
        if last_text.as_deref() == Some(&text[..]) {
            continue;
        }
        last_text = Some(text.clone());
        let config = match read(&text) {
            Ok(config) => config,
            Err(e) => {
                app.metrics
                    .policy_reloads
                    .get_or_create(&ReloadLabels { result: "invalid" })
                    .inc();
                tracing::error!(file = %path.display(), error = %e, "config file unreadable; the policy in force stays");
                continue;
            }
        };
        let unchanged_policy = last.as_ref().is_some_and(|l| l.policy == config.policy);
        let others_changed = last.as_ref().is_some_and(|l| {
            shadowcat_crds::SidecarConfig {
                policy: None,
                ..l.clone()
            } != shadowcat_crds::SidecarConfig {
                policy: None,
                ..config.clone()
            }
        });
        if others_changed {
            tracing::warn!(file = %path.display(), "config changed beyond `policy`; those changes take effect on restart");
        }
        if unchanged_policy {
            last = Some(config);
            continue;
        }
        let policy = match &config.policy {
            None => Ok(None),
            Some(p) => build(p, &app.store, &app.metrics).map(Some),
        };
        match policy {
            Ok(policy) => {
                let rules = policy.as_ref().map_or(0, |p| p.rules.len());
                app.policies.set(policy);
                app.metrics
                    .policy_reloads
                    .get_or_create(&ReloadLabels { result: "ok" })
                    .inc();
                tracing::info!(file = %path.display(), rules, "policy reloaded");
                last = Some(config);
            }
            Err(e) => {
                app.metrics
                    .policy_reloads
                    .get_or_create(&ReloadLabels { result: "invalid" })
                    .inc();
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    line = e.position.map(|p| p.0),
                    column = e.position.map(|p| p.1),
                    "new policy refused; the policy in force stays"
                );
            }
        }
    }
}
