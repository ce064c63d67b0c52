//! Renewal decisions over time, the Secret round trip, and the Keeper
//! against the fake API server.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::fixtures::{Call, not_found};

fn names() -> Vec<String> {
    dns_names("shadowcat-webhook", "shadowcat-system")
}

#[test]
fn names_cover_every_way_the_service_is_addressed() {
    assert_eq!(
        names(),
        [
            "shadowcat-webhook.shadowcat-system.svc",
            "shadowcat-webhook.shadowcat-system.svc.cluster.local",
            "shadowcat-webhook.shadowcat-system",
            "shadowcat-webhook"
        ]
    );
}

#[test]
fn renewal_comes_before_expiry_and_keeps_the_old_ca_trusted() {
    let now = OffsetDateTime::now_utc();
    let day = |d: i64| now + time::Duration::days(d);
    let first = Material::new(&names(), now).unwrap();
    assert_eq!(first.not_after, day(90).unix_timestamp());
    assert_eq!(
        first.ca_not_after,
        (now - time::Duration::minutes(5) + time::Duration::days(365)).unix_timestamp()
    );
    assert_eq!(first.renewed(&names(), day(59)).unwrap(), None, "fresh");

    // 61 days on, the serving certificate has under 30 days left: re-signed
    // by the same CA.
    let resigned = first.renewed(&names(), day(61)).unwrap().unwrap();
    assert_eq!(
        (&resigned.ca_cert, &resigned.ca_key),
        (&first.ca_cert, &first.ca_key)
    );
    assert_ne!(resigned.cert, first.cert);
    assert_eq!(resigned.not_after, day(151).unix_timestamp());
    assert_eq!(resigned.bundle(), first.ca_cert, "one CA in the bundle");

    // Other names (the Service renamed): re-signed at once.
    let other = dns_names("hooks", "shadowcat-system");
    let renamed = first.renewed(&other, now).unwrap().unwrap();
    assert_eq!(renamed.dns_names, other.join(","));
    assert_eq!(renamed.ca_cert, first.ca_cert);

    // 300 days on, the certificate (signed again, so far) runs to the
    // CA's own end; 306 days on, the CA has under 60 days left: a successor
    // joins the bundle, and signs nothing yet.
    let late = first.renewed(&names(), day(300)).unwrap().unwrap();
    assert_eq!((late.not_after, late.next_ca.clone()), (first.ca_not_after, None));
    let joined = late.renewed(&names(), day(306)).unwrap().unwrap();
    let successor = joined.next_ca.clone().expect("a successor");
    assert_eq!((&joined.ca_cert, &joined.cert), (&first.ca_cert, &late.cert));
    assert_eq!(joined.bundle(), format!("{}{}", first.ca_cert, successor.cert));
    let hour = time::Duration::hours(1);
    assert_eq!(successor.since, 0, "not published yet");
    assert_eq!(
        joined.renewed(&names(), day(320)).unwrap(),
        None,
        "never promoted before the bundle holding it is published"
    );
    // Published at day 306 + 1 h (publishing failed for an hour, say).
    let marked = joined.published(day(306) + hour).unwrap();
    assert_eq!(marked.published(day(307)), None, "marked once");
    assert_eq!(
        marked
            .renewed(&names(), day(306) + hour + hour - time::Duration::seconds(1))
            .unwrap(),
        None,
        "not before an hour in the published bundle"
    );
    // An hour on, it takes over: it signs, and the old CA stays trusted
    // until it expires, then leaves the bundle.
    let rotated = marked.renewed(&names(), day(306) + hour + hour).unwrap().unwrap();
    assert_eq!(rotated.ca_cert, successor.cert);
    assert_eq!(rotated.next_ca, None);
    assert_ne!(rotated.cert, first.cert);
    assert_eq!(
        rotated.previous_ca,
        Some((first.ca_cert.clone(), first.ca_not_after))
    );
    assert_eq!(rotated.bundle(), format!("{}{}", successor.cert, first.ca_cert));
    assert_eq!(rotated.renewed(&names(), day(320)).unwrap(), None);
    let dropped = rotated.renewed(&names(), day(366)).unwrap().unwrap();
    assert_eq!(dropped.previous_ca, None);
    assert_eq!(dropped.ca_cert, rotated.ca_cert);

    // Down past the CA's expiry: a new CA at once (what the old one signs
    // is trusted by no one any more).
    let revived = first.renewed(&names(), day(400)).unwrap().unwrap();
    assert_ne!(revived.ca_cert, first.ca_cert);
    assert_eq!(
        (revived.previous_ca.clone(), revived.next_ca.clone()),
        (None, None)
    );
}

#[test]
fn a_serving_certificate_never_outlives_its_ca() {
    let now = OffsetDateTime::now_utc();
    let mut material = Material::new(&names(), now).unwrap();
    material.ca_not_after = (now + time::Duration::days(70)).unix_timestamp();
    material.sign(&names(), now).unwrap();
    assert_eq!(material.not_after, material.ca_not_after);
}

#[test]
fn the_secret_round_trips_and_a_damaged_one_is_rewritten() {
    let now = OffsetDateTime::now_utc();
    let first = Material::new(&names(), now).unwrap();
    let joined = first
        .renewed(&names(), now + time::Duration::days(306))
        .unwrap()
        .unwrap();
    let joined = joined.published(now + time::Duration::days(306)).unwrap();
    let rotated = joined
        .renewed(&names(), now + time::Duration::days(307))
        .unwrap()
        .unwrap();
    assert!(joined.next_ca.is_some() && rotated.previous_ca.is_some());
    for material in [first, joined, rotated] {
        assert_eq!(Material::from_data(&material.to_data()), Some(material.clone()));
        let mut damaged = material.to_data();
        damaged.remove("tls.key");
        assert_eq!(Material::from_data(&damaged), None);
    }
}

fn keeper_of(client: kube::Client) -> Keeper {
    Keeper {
        secrets: Api::namespaced(client.clone(), "shadowcat-system"),
        secret: "shadowcat-webhook-tls".into(),
        configurations: Api::all(client),
        configuration: "shadowcat".into(),
        dns_names: names(),
    }
}

const SECRET: &str = "/api/v1/namespaces/shadowcat-system/secrets/shadowcat-webhook-tls";
const SECRETS: &str = "/api/v1/namespaces/shadowcat-system/secrets";
const CONFIGURATION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/shadowcat";

fn configuration(bundle: Option<&str>) -> Value {
    let mut webhook = json!({
        "name": "inject.shadowcat.dev",
        "clientConfig": {"service": {"name": "shadowcat-webhook", "namespace": "shadowcat-system", "path": "/mutate"}},
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None"
    });
    if let Some(bundle) = bundle {
        use base64::Engine as _;
        webhook["clientConfig"]["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(bundle));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "shadowcat", "resourceVersion": "5"},
        "webhooks": [webhook]
    })
}

/// First start: no Secret, so one is made; the configuration gets its
/// bundle. A second replica then reads that Secret, finds the bundle in
/// place, and writes nothing.
#[tokio::test]
async fn first_start_makes_the_secret_and_publishes_the_bundle_once() {
    let made: std::sync::Arc<Mutex<Option<Value>>> = Default::default();
    let (made_in, made_out) = (made.clone(), made.clone());
    let (ctx, server) = crate::fixtures::scenario(vec![
        Call::new("GET", SECRET, not_found()).status(404),
        Call::new("POST", SECRETS, json!({})).check(move |secret| {
            assert_eq!(secret["metadata"]["name"], "shadowcat-webhook-tls");
            for key in [
                "ca.crt",
                "ca.key",
                "ca-bundle.crt",
                "tls.crt",
                "tls.key",
                "not-after",
            ] {
                assert!(secret["data"][key].is_string(), "{key} in {secret}");
            }
            *made_in.lock().unwrap() = Some(secret.clone());
        }),
        Call::new("GET", CONFIGURATION, configuration(None)),
        Call::new("PUT", CONFIGURATION, json!({})).check(move |c| {
            assert_eq!(
                c["metadata"]["resourceVersion"], "5",
                "written at the version read"
            );
            let secret = made_out.lock().unwrap().clone().unwrap();
            assert_eq!(
                c["webhooks"][0]["clientConfig"]["caBundle"],
                secret["data"]["ca-bundle.crt"]
            );
        }),
    ]);
    let keeper = keeper_of(ctx.client.clone());
    let material = keeper.current(OffsetDateTime::now_utc()).await.unwrap();
    assert!(keeper.publish(&material.bundle()).await.unwrap());
    crate::fixtures::verify(server).await;

    let secret = made.lock().unwrap().clone().unwrap();
    let mut stored = secret.clone();
    stored["metadata"]["resourceVersion"] = json!("9");
    let (ctx, server) = crate::fixtures::scenario(vec![
        Call::new("GET", SECRET, stored),
        Call::new("GET", CONFIGURATION, configuration(Some(&material.bundle()))),
    ]);
    let keeper = keeper_of(ctx.client.clone());
    let again = keeper.current(OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(again, material, "the other replica serves the same certificate");
    assert!(keeper.publish(&again.bundle()).await.unwrap());
    crate::fixtures::verify(server).await;
}

/// Two replicas renew at once: the second's write is a 409, and it reads
/// again instead of overwriting the first's certificate.
#[tokio::test]
async fn a_lost_race_reads_again() {
    let (ctx, server) = crate::fixtures::scenario(vec![
        Call::new("GET", SECRET, not_found()).status(404),
        Call::new(
            "POST",
            SECRETS,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
        )
        .status(409),
        Call::new("GET", CONFIGURATION, not_found()).status(404),
    ]);
    let keeper = keeper_of(ctx.client.clone());
    assert!(matches!(
        keeper.current(OffsetDateTime::now_utc()).await,
        Err(KeepError::Raced)
    ));
    assert!(!keeper.publish("bundle").await.unwrap(), "no configuration yet");
    crate::fixtures::verify(server).await;
}
