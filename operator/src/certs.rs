//! The webhook's TLS certificate, when cert-manager does not provide it: a
//! CA of the operator's own and a serving certificate it signs, kept in a
//! Secret in the operator's namespace so every replica serves the same, and
//! the CA bundle kept current on the MutatingWebhookConfiguration. Both are
//! renewed well before they expire. A CA is renewed in two steps: the new
//! one joins the bundle first, and signs serving certificates only once the
//! bundle holding it has been published for an hour (the API servers have
//! long since read it); the old one stays in the bundle until it expires.
//! So no certificate is ever served that the API servers do not trust yet.
//!
//! Every replica runs this (the webhook is served by all of them, leader or
//! not): they read the Secret, and the first to find it missing or due for
//! renewal writes a new one; optimistic concurrency (create, or replace at
//! the resourceVersion read) makes the others read what it wrote.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use time::OffsetDateTime;

use crate::webhook::Certificates;

/// How long the CA is valid.
const CA_DAYS: i64 = 365;
/// How long a serving certificate is valid.
const SERVING_DAYS: i64 = 90;
/// A CA is renewed when it has fewer days left than this.
const CA_RENEW_DAYS: i64 = 60;
/// A serving certificate is renewed when it has fewer days left than this.
const SERVING_RENEW_DAYS: i64 = 30;
/// How often the Secret and the bundle are looked at.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// How long a new CA is in the published bundle before it signs.
const PROMOTE_AFTER: time::Duration = time::Duration::hours(1);
const CA_NAME: &str = "shadowcat-webhook-ca";

/// Keys of the Secret.
mod key {
    pub const CA_CERT: &str = "ca.crt";
    pub const CA_KEY: &str = "ca.key";
    /// The CAs the webhook's clients trust: the current one, and the
    /// previous one until it expires.
    pub const BUNDLE: &str = "ca-bundle.crt";
    pub const CERT: &str = "tls.crt";
    pub const KEY: &str = "tls.key";
    /// Expiry times, Unix seconds, and the names the certificate covers.
    pub const CA_NOT_AFTER: &str = "ca-not-after";
    pub const PREVIOUS_CA: &str = "previous-ca.crt";
    pub const PREVIOUS_CA_NOT_AFTER: &str = "previous-ca-not-after";
    /// The CA that takes over: trusted, not yet signing.
    pub const NEXT_CA: &str = "next-ca.crt";
    pub const NEXT_CA_KEY: &str = "next-ca.key";
    pub const NEXT_CA_NOT_AFTER: &str = "next-ca-not-after";
    /// When it joined the bundle (Unix seconds).
    pub const NEXT_CA_SINCE: &str = "next-ca-since";
    pub const NOT_AFTER: &str = "not-after";
    pub const DNS_NAMES: &str = "dns-names";
}

/// What the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The current CA, PEM.
    pub ca_cert: String,
    /// Its key, PEM.
    pub ca_key: String,
    /// When it expires (Unix seconds).
    pub ca_not_after: i64,
    /// The previous CA and its expiry, while it is still valid.
    pub previous_ca: Option<(String, i64)>,
    /// The CA that takes over, trusted but not yet signing.
    pub next_ca: Option<NextCa>,
    /// The serving certificate, PEM.
    pub cert: String,
    /// Its key, PEM.
    pub key: String,
    /// When it expires (Unix seconds).
    pub not_after: i64,
    /// The names it covers, comma-separated.
    pub dns_names: String,
}

/// A CA in the bundle before it signs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NextCa {
    /// Its certificate, PEM.
    pub cert: String,
    /// Its key, PEM.
    pub key: String,
    /// When it expires (Unix seconds).
    pub not_after: i64,
    /// When the bundle holding it was first published (Unix seconds); 0
    /// until then.
    pub since: i64,
}

/// A CA: certificate and key (PEM), and when it expires.
fn make_ca(now: OffsetDateTime) -> Result<(String, String, i64), CertError> {
    let key = KeyPair::generate()?;
    let params = ca_params(now - time::Duration::minutes(5));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem(), seconds(params.not_after)))
}

/// A certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make the webhook certificate: {0}")]
pub struct CertError(#[from] rcgen::Error);

fn ca_params(not_before: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = not_before;
    params.not_after = not_before + time::Duration::days(CA_DAYS);
    params
}

fn seconds(t: OffsetDateTime) -> i64 {
    t.unix_timestamp()
}

impl Material {
    /// A new CA and a serving certificate it signs for `dns_names`, valid
    /// from `now`.
    pub fn new(dns_names: &[String], now: OffsetDateTime) -> Result<Self, CertError> {
        let (ca_cert, ca_key, ca_not_after) = make_ca(now)?;
        let mut material = Self {
            ca_cert,
            ca_not_after,
            ca_key,
            previous_ca: None,
            next_ca: None,
            cert: String::new(),
            key: String::new(),
            not_after: 0,
            dns_names: String::new(),
        };
        material.sign(dns_names, now)?;
        Ok(material)
    }

    /// Replaces the serving certificate by one for `dns_names` the current
    /// CA signs.
    fn sign(&mut self, dns_names: &[String], now: OffsetDateTime) -> Result<(), CertError> {
        let ca_key = KeyPair::from_pem(&self.ca_key)?;
        // The issuer is named as the CA was: the same subject, the same key.
        let issuer = Issuer::new(ca_params(now), ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(
            DnType::CommonName,
            dns_names.first().map_or("shadowcat-webhook", String::as_str),
        );
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - time::Duration::minutes(5);
        // Never past the CA's own expiry.
        let ca_end = OffsetDateTime::from_unix_timestamp(self.ca_not_after).unwrap_or(now);
        params.not_after = (now + time::Duration::days(SERVING_DAYS)).min(ca_end);
        let cert = params.signed_by(&key, &issuer)?;
        self.cert = cert.pem();
        self.key = key.serialize_pem();
        self.not_after = seconds(params.not_after);
        self.dns_names = dns_names.join(",");
        Ok(())
    }

    /// What must change at `now`, if anything, `None` when nothing:
    /// - a CA with under 60 days left gets a successor, in the bundle only;
    /// - a successor an hour in the bundle takes over: it signs a new
    ///   serving certificate, and the old CA stays trusted until it expires;
    /// - a serving certificate with under 30 days left, or for other names,
    ///   is signed again;
    /// - an expired previous CA leaves the bundle.
    pub fn renewed(&self, dns_names: &[String], now: OffsetDateTime) -> Result<Option<Self>, CertError> {
        let left = |not_after: i64| time::Duration::seconds(not_after - seconds(now));
        if left(self.ca_not_after) <= time::Duration::ZERO {
            // Expired (the operator was down for months): nothing it signs
            // is trusted. A successor already published takes over at once;
            // else start over.
            let Some(successor) = self
                .next_ca
                .clone()
                .filter(|n| n.since > 0 && left(n.not_after) > time::Duration::ZERO)
            else {
                return Self::new(dns_names, now).map(Some);
            };
            let mut next = self.clone();
            next.previous_ca = None;
            next.ca_cert = successor.cert;
            next.ca_key = successor.key;
            next.ca_not_after = successor.not_after;
            next.next_ca = None;
            next.sign(dns_names, now)?;
            return Ok(Some(next));
        }
        let mut next = self.clone();
        if next
            .previous_ca
            .as_ref()
            .is_some_and(|(_, not_after)| left(*not_after) <= time::Duration::ZERO)
        {
            next.previous_ca = None;
        }
        // `since` is when the bundle holding the successor was first
        // published (0 until then): an hour after that, not after it was
        // made, since publishing can fail for a while.
        let promote = self
            .next_ca
            .as_ref()
            .is_some_and(|n| n.since > 0 && time::Duration::seconds(seconds(now) - n.since) >= PROMOTE_AFTER);
        if let (true, Some(successor)) = (promote, self.next_ca.clone()) {
            next.previous_ca = (left(self.ca_not_after) > time::Duration::ZERO)
                .then(|| (self.ca_cert.clone(), self.ca_not_after));
            next.ca_cert = successor.cert;
            next.ca_key = successor.key;
            next.ca_not_after = successor.not_after;
            next.next_ca = None;
            next.sign(dns_names, now)?;
        } else {
            if self.next_ca.is_none() && left(self.ca_not_after) < time::Duration::days(CA_RENEW_DAYS) {
                let (cert, key, not_after) = make_ca(now)?;
                next.next_ca = Some(NextCa {
                    cert,
                    key,
                    not_after,
                    since: 0,
                });
            }
            if left(self.not_after) < time::Duration::days(SERVING_RENEW_DAYS)
                || self.dns_names != dns_names.join(",")
            {
                next.sign(dns_names, now)?;
            }
        }
        Ok((next != *self).then_some(next))
    }

    /// The same, its successor marked published at `now` if it was not:
    /// `None` when there is nothing to mark.
    pub fn published(&self, now: OffsetDateTime) -> Option<Self> {
        let mut next = self.clone();
        let successor = next.next_ca.as_mut().filter(|n| n.since == 0)?;
        successor.since = seconds(now);
        Some(next)
    }

    /// The PEM bundle the webhook's clients trust: the CA that signs, the
    /// one that takes over next, and the previous one until it expires.
    pub fn bundle(&self) -> String {
        let mut bundle = self.ca_cert.clone();
        if let Some(next) = &self.next_ca {
            bundle.push_str(&next.cert);
        }
        if let Some((previous, _)) = &self.previous_ca {
            bundle.push_str(previous);
        }
        bundle
    }

    /// As the Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        let mut data = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            data.insert(k.to_owned(), ByteString(v.as_bytes().to_vec()));
        };
        put(key::CA_CERT, &self.ca_cert);
        put(key::CA_KEY, &self.ca_key);
        put(key::CA_NOT_AFTER, &self.ca_not_after.to_string());
        put(key::BUNDLE, &self.bundle());
        put(key::CERT, &self.cert);
        put(key::KEY, &self.key);
        put(key::NOT_AFTER, &self.not_after.to_string());
        put(key::DNS_NAMES, &self.dns_names);
        if let Some((previous, not_after)) = &self.previous_ca {
            put(key::PREVIOUS_CA, previous);
            put(key::PREVIOUS_CA_NOT_AFTER, &not_after.to_string());
        }
        if let Some(next) = &self.next_ca {
            put(key::NEXT_CA, &next.cert);
            put(key::NEXT_CA_KEY, &next.key);
            put(key::NEXT_CA_NOT_AFTER, &next.not_after.to_string());
            put(key::NEXT_CA_SINCE, &next.since.to_string());
        }
        data
    }

    /// From the Secret's data; `None` when something is missing or
    /// unreadable (the Secret is then rewritten).
    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Option<Self> {
        let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
        let number = |k: &str| text(k).and_then(|t| t.trim().parse::<i64>().ok());
        let previous_ca = match (text(key::PREVIOUS_CA), number(key::PREVIOUS_CA_NOT_AFTER)) {
            (Some(ca), Some(not_after)) => Some((ca, not_after)),
            _ => None,
        };
        let next_ca = match (
            text(key::NEXT_CA),
            text(key::NEXT_CA_KEY),
            number(key::NEXT_CA_NOT_AFTER),
            number(key::NEXT_CA_SINCE),
        ) {
            (Some(cert), Some(key), Some(not_after), Some(since)) => Some(NextCa {
                cert,
                key,
                not_after,
                since,
            }),
            _ => None,
        };
        Some(Self {
            next_ca,
            ca_cert: text(key::CA_CERT)?,
            ca_key: text(key::CA_KEY)?,
            ca_not_after: number(key::CA_NOT_AFTER)?,
            previous_ca,
            cert: text(key::CERT)?,
            key: text(key::KEY)?,
            not_after: number(key::NOT_AFTER)?,
            dns_names: text(key::DNS_NAMES)?,
        })
    }
}

/// The names the serving certificate covers for Service `service` in
/// namespace `ns`.
pub fn dns_names(service: &str, ns: &str) -> Vec<String> {
    vec![
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
        format!("{service}.{ns}"),
        service.to_owned(),
    ]
}

/// Where the operator keeps its certificate and whom it tells.
pub struct Keeper {
    /// Secrets of the operator's namespace.
    pub secrets: Api<Secret>,
    /// The Secret's name.
    pub secret: String,
    /// MutatingWebhookConfigurations.
    pub configurations: Api<MutatingWebhookConfiguration>,
    /// The one whose `caBundle` is kept current.
    pub configuration: String,
    /// The names the certificate covers.
    pub dns_names: Vec<String>,
}

/// A step of keeping the certificate failed.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The API refused or failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Making a certificate failed.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Another replica wrote the Secret first; read it again.
    #[error("the Secret changed while it was renewed")]
    Raced,
    /// The certificate in the Secret does not load.
    #[error("the webhook certificate in the Secret does not load: {0}")]
    Load(String),
    /// The MutatingWebhookConfiguration does not exist (yet).
    #[error("MutatingWebhookConfiguration {0} not found")]
    NoConfiguration(String),
}

impl Keeper {
    /// The material in force at `now`, renewed and written back if due.
    pub async fn current(&self, now: OffsetDateTime) -> Result<Material, KeepError> {
        let found = self.secrets.get_opt(&self.secret).await?;
        let existing = found
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(Material::from_data);
        let next = match &existing {
            Some(material) => match material.renewed(&self.dns_names, now)? {
                None => return Ok(material.clone()),
                Some(next) => next,
            },
            None => Material::new(&self.dns_names, now)?,
        };
        self.write(found.as_ref(), next).await
    }

    /// Writes `next` over `found` (or creates it), at the version read.
    async fn write(&self, found: Option<&Secret>, next: Material) -> Result<Material, KeepError> {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                resource_version: found.and_then(|s| s.metadata.resource_version.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "shadowcat-operator".to_owned(),
                )])),
                ..Default::default()
            },
            data: Some(next.to_data()),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let written = match found {
            None => self.secrets.create(&PostParams::default(), &secret).await,
            Some(_) => {
                self.secrets
                    .replace(&self.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %self.secret, not_after = next.not_after, "webhook certificate renewed");
                Ok(next)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(KeepError::Raced),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `bundle` as the `caBundle` of every webhook of the
    /// configuration, where it differs. `false` when the configuration
    /// does not exist (yet).
    pub async fn publish(&self, bundle: &str) -> Result<bool, KeepError> {
        let Some(mut configuration) = self.configurations.get_opt(&self.configuration).await? else {
            return Ok(false);
        };
        let wanted = ByteString(bundle.as_bytes().to_vec());
        let mut changed = false;
        for webhook in configuration.webhooks.iter_mut().flatten() {
            if webhook.client_config.ca_bundle.as_ref() != Some(&wanted) {
                webhook.client_config.ca_bundle = Some(wanted.clone());
                changed = true;
            }
        }
        if changed {
            // At the resourceVersion read: a concurrent writer makes this a
            // 409, and the next round reads again.
            match self
                .configurations
                .replace(&self.configuration, &PostParams::default(), &configuration)
                .await
            {
                Ok(_) => tracing::info!(configuration = %self.configuration, "webhook CA bundle updated"),
                Err(kube::Error::Api(e)) if e.code == 409 => return Err(KeepError::Raced),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }

    /// Keeps the certificate and the bundle current for as long as the
    /// operator runs, loading each new certificate into `serving`.
    pub async fn run(self, serving: Arc<Certificates>) {
        loop {
            let wait = match self.round(&serving).await {
                Ok(()) => CHECK_EVERY,
                Err(KeepError::Raced) => Duration::from_secs(1),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot keep the webhook certificate");
                    Duration::from_secs(10)
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    async fn round(&self, serving: &Certificates) -> Result<(), KeepError> {
        let material = self.current(OffsetDateTime::now_utc()).await?;
        // The bundle first: a CA joins it before anything it signed is
        // served (a successor signs only an hour after it was published).
        let published = self.publish(&material.bundle()).await?;
        if published && let Some(marked) = material.published(OffsetDateTime::now_utc()) {
            // Only over what was published: another replica may have moved on.
            let found = self.secrets.get_opt(&self.secret).await?;
            let stored = found
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(Material::from_data);
            if stored.as_ref() != Some(&material) {
                return Err(KeepError::Raced);
            }
            self.write(found.as_ref(), marked).await?;
        }
        serving
            .load(&material.cert, &material.key)
            .map_err(|e| KeepError::Load(e.to_string()))?;
        if !published {
            return Err(KeepError::NoConfiguration(self.configuration.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
