//! Leader election on a coordination.k8s.io Lease, so the chart can run two
//! operator replicas with one reconciling (both serve the webhook).
//!
//! - Acquiring and renewing write at the resourceVersion read, so two
//!   candidates never both win.
//! - A candidate never compares the holder's `renewTime` with its own clock
//!   (clocks drift between nodes): it takes the lease only once the record
//!   has stayed unchanged for a whole lease duration as it observes it, on
//!   its own monotonic clock.
//! - A leader that has not renewed within the renew deadline, shorter than
//!   the lease duration, stops leading, and each renewal call is cut off at
//!   that deadline: a hung call cannot keep a leader past the point where a
//!   candidate may take over.
//! - On shutdown the leader releases the lease, so a standby takes over at
//!   once rather than after a lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

/// How long a lease lasts without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// A leader that has not renewed for this long stops leading.
pub const RENEW_DEADLINE: Duration = Duration::from_secs(10);
/// How often the leader renews, and a candidate looks.
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// A candidate's memory of the lease record as it last saw it change.
#[derive(Debug, Default)]
pub struct Observed {
    record: Option<String>,
    since: Option<Instant>,
}

/// What to do with the lease as read.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// No lease: create it.
    Create,
    /// Take or renew it (write at the version read).
    Write,
    /// Another holds it and may be alive: wait.
    Wait,
}

/// Decides, for `me`, on `lease` read at `version`, at local time `now`.
pub fn decide(lease: Option<(&LeaseSpec, &str)>, me: &str, observed: &mut Observed, now: Instant) -> Step {
    let Some((spec, version)) = lease else {
        return Step::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == me => return Step::Write,
        None | Some("") => return Step::Write,
        Some(_) => {}
    }
    // The record's identity: who holds it and how often it was renewed is
    // in the resourceVersion; any write changes it.
    if observed.record.as_deref() != Some(version) {
        observed.record = Some(version.to_owned());
        observed.since = Some(now);
        return Step::Wait;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, Duration::from_secs);
    match observed.since {
        Some(since) if now.duration_since(since) > duration => Step::Write,
        _ => Step::Wait,
    }
}

fn spec(me: &str, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let keeps = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
        renew_time: Some(now.clone()),
        acquire_time: if keeps {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(now)
        },
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(!keeps && previous.is_some()),
        ),
        ..Default::default()
    }
}

/// One candidate or leader.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    observed: Observed,
}

impl Elector {
    /// `me` on Lease `name`.
    pub fn new(api: Api<Lease>, name: &str, me: &str) -> Self {
        Self {
            api,
            name: name.to_owned(),
            me: me.to_owned(),
            observed: Observed::default(),
        }
    }

    /// One attempt to take or renew the lease; `true` when `me` holds it.
    pub async fn try_hold(&mut self) -> kube::Result<bool> {
        let found = self.api.get_opt(&self.name).await?;
        let read = found.as_ref().map(|l| {
            (
                l.spec.clone().unwrap_or_default(),
                l.metadata.resource_version.clone().unwrap_or_default(),
            )
        });
        let step = decide(
            read.as_ref().map(|(s, v)| (s, v.as_str())),
            &self.me,
            &mut self.observed,
            Instant::now(),
        );
        let written = match (step, found) {
            (Step::Wait, _) => return Ok(false),
            (Step::Create, _) | (Step::Write, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(spec(&self.me, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (Step::Write, Some(mut lease)) => {
                lease.spec = Some(spec(&self.me, lease.spec.as_ref()));
                self.api.replace(&self.name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            // Someone else wrote first: they hold it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until `me` holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, "became leader");
                    return;
                }
                Ok(false) => tracing::debug!(lease = %self.name, "another replica leads"),
                Err(e) => tracing::warn!(error = %e, "cannot read the lease"),
            }
            tokio::time::sleep(RETRY_PERIOD).await;
        }
    }

    /// Renews the lease until it is lost or not renewed within the renew
    /// deadline; then returns, and the caller stops leading.
    pub async fn keep(&mut self) {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(RETRY_PERIOD).await;
            let left = RENEW_DEADLINE.saturating_sub(renewed.elapsed());
            // The renewal counts from when it was sent: a standby starts
            // its wait when it sees the write, which may be long before a
            // slow answer arrives here.
            let sent = Instant::now();
            match tokio::time::timeout(left, self.try_hold()).await {
                Ok(Ok(true)) => renewed = sent,
                Ok(Ok(false)) => {
                    tracing::error!(lease = %self.name, "lost the lease to another replica");
                    return;
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the lease"),
                Err(_) => tracing::warn!("renewing the lease timed out"),
            }
            if renewed.elapsed() >= RENEW_DEADLINE {
                tracing::error!(lease = %self.name, "could not renew the lease within the deadline");
                return;
            }
        }
    }

    /// Gives the lease up, if `me` holds it, so a standby takes over now.
    pub async fn release(&self) -> kube::Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.into()),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn a_free_or_own_lease_is_written_at_once() {
        let now = Instant::now();
        let mut observed = Observed::default();
        assert_eq!(decide(None, "a", &mut observed, now), Step::Create);
        assert_eq!(
            decide(Some((&held("a"), "1")), "a", &mut observed, now),
            Step::Write
        );
        assert_eq!(
            decide(Some((&LeaseSpec::default(), "1")), "a", &mut observed, now),
            Step::Write
        );
        let released = LeaseSpec {
            holder_identity: Some(String::new()),
            ..held("b")
        };
        assert_eq!(
            decide(Some((&released, "2")), "a", &mut observed, now),
            Step::Write
        );
    }

    /// The holder's renewTime is never read: only how long the record has
    /// stood still on this candidate's clock. A renewTime far in the past
    /// (the holder's clock behind) does not make the lease free.
    #[test]
    fn another_holder_expires_by_the_local_clock_only() {
        let start = Instant::now();
        let mut observed = Observed::default();
        let mut lease = held("b");
        lease.renew_time = Some(MicroTime(Timestamp::UNIX_EPOCH));
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(decide(Some((&lease, "7")), "a", &mut observed, at(0)), Step::Wait);
        assert_eq!(
            decide(Some((&lease, "7")), "a", &mut observed, at(14)),
            Step::Wait
        );
        // Renewed by b (a new version): the wait starts again.
        assert_eq!(
            decide(Some((&lease, "8")), "a", &mut observed, at(15)),
            Step::Wait
        );
        assert_eq!(
            decide(Some((&lease, "8")), "a", &mut observed, at(29)),
            Step::Wait
        );
        assert_eq!(
            decide(Some((&lease, "8")), "a", &mut observed, at(31)),
            Step::Write
        );
    }

    /// Two replicas on the stateful fake API server, on a paused clock:
    /// one leads; the other takes over only after the record has stood
    /// still for a lease on its own clock, or at once when it is released.
    #[tokio::test(start_paused = true)]
    async fn two_replicas_take_turns_by_observation_and_release() {
        let cluster = crate::fixtures::cluster::Cluster::default();
        let api = || Api::<Lease>::namespaced(cluster.client(), "shadowcat-system");
        let mut a = Elector::new(api(), "shadowcat", "a");
        let mut b = Elector::new(api(), "shadowcat", "b");
        assert!(a.try_hold().await.unwrap(), "a creates the lease");
        assert!(!b.try_hold().await.unwrap(), "b sees a's record");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(a.try_hold().await.unwrap(), "a renews");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(
            !b.try_hold().await.unwrap(),
            "renewed within the lease: b waits again"
        );
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(
            b.try_hold().await.unwrap(),
            "a stood still for a lease: b takes it"
        );
        assert!(!a.try_hold().await.unwrap(), "a lost it");
        let lease = api().get("shadowcat").await.unwrap().spec.unwrap();
        assert_eq!(
            (lease.holder_identity.as_deref(), lease.lease_transitions),
            (Some("b"), Some(1))
        );

        b.release().await.unwrap();
        a.release().await.unwrap();
        assert_eq!(
            api()
                .get("shadowcat")
                .await
                .unwrap()
                .spec
                .unwrap()
                .holder_identity,
            None
        );
        assert!(a.try_hold().await.unwrap(), "released: a takes it at once");
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_lease() {
        const { assert!(RENEW_DEADLINE.as_secs() < LEASE_DURATION.as_secs()) };
        const { assert!(RETRY_PERIOD.as_secs() * 2 < RENEW_DEADLINE.as_secs()) };
        let renewed = spec("a", Some(&held("b")));
        assert_eq!(renewed.lease_transitions, Some(1));
        assert_eq!(renewed.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec("a", Some(&renewed)).lease_transitions, Some(1));
    }
}
