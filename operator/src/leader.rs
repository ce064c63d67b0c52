//! Leader election on a coordination.k8s.io Lease, so the chart can run two
//! operator replicas with one reconciling. Optimistic concurrency (the
//! Lease's resourceVersion) makes acquiring and renewing atomic; a leader that
//! cannot renew before its lease runs out stops, and Kubernetes restarts it
//! as a candidate.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

/// How long a lease lasts without renewal.
const LEASE_SECONDS: i32 = 15;
/// How often the holder renews (and a candidate retries).
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Whether `lease` may be taken by `me` at `now`.
pub fn can_take(lease: &LeaseSpec, me: &str, now: Timestamp) -> bool {
    match (&lease.holder_identity, &lease.renew_time) {
        (Some(holder), _) if holder == me => true,
        (None, _) | (_, None) => true,
        (Some(_), Some(renewed)) => {
            let seconds = i64::from(lease.lease_duration_seconds.unwrap_or(LEASE_SECONDS));
            renewed.0 + SignedDuration::from_secs(seconds) < now
        }
    }
}

fn spec(me: &str, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
    let keeps = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(LEASE_SECONDS),
        renew_time: Some(MicroTime(now)),
        acquire_time: if keeps {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(!keeps && previous.is_some()),
        ),
        ..Default::default()
    }
}

/// One attempt to take or renew the lease; `true` when `me` holds it.
pub async fn try_hold(api: &Api<Lease>, name: &str, me: &str) -> kube::Result<bool> {
    let now = Timestamp::now();
    match api.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                spec: Some(spec(me, None, now)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            if !can_take(&current, me, now) {
                return Ok(false);
            }
            lease.spec = Some(spec(me, Some(&current), now));
            // Replace carries the resourceVersion read: a concurrent writer
            // makes this fail with 409 instead of both winning.
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until `me` holds the lease.
pub async fn acquire(api: &Api<Lease>, name: &str, me: &str) {
    loop {
        match try_hold(api, name, me).await {
            Ok(true) => {
                tracing::info!(lease = name, "became leader");
                return;
            }
            Ok(false) => tracing::debug!(lease = name, "another replica leads"),
            Err(e) => tracing::warn!(error = %e, "cannot read the lease"),
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

/// Renews the lease until renewal fails for a whole lease period; then returns.
pub async fn keep(api: &Api<Lease>, name: &str, me: &str) {
    let mut last_held = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match try_hold(api, name, me).await {
            Ok(true) => last_held = tokio::time::Instant::now(),
            Ok(false) => {
                tracing::error!(lease = name, "lost the lease to another replica");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
        }
        if last_held.elapsed() > Duration::from_secs(LEASE_SECONDS as u64) {
            tracing::error!(lease = name, "could not renew the lease in time");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_mine_or_expired() {
        let now = Timestamp::now();
        let held = |by: &str, ago: i64| LeaseSpec {
            holder_identity: Some(by.into()),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(can_take(&LeaseSpec::default(), "a", now));
        assert!(can_take(&held("a", 5), "a", now));
        assert!(!can_take(&held("b", 5), "a", now));
        assert!(can_take(&held("b", 20), "a", now));
        let renewed = spec("a", Some(&held("b", 20)), now);
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.holder_identity.as_deref(), Some("a"));
    }
}
