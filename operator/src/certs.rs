//! The webhook's TLS certificate, when cert-manager does not provide it: a
//! CA of the operator's own and a serving certificate it signs, kept in a
//! Secret in the operator's namespace so every replica serves the same, and
//! the CA bundle kept current on the MutatingWebhookConfiguration. Both are
//! renewed well before they expire; a renewed CA is trusted next to the old
//! one until the old one expires, so a serving certificate signed by either
//! is accepted while the API servers catch up.
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
    /// The serving certificate, PEM.
    pub cert: String,
    /// Its key, PEM.
    pub key: String,
    /// When it expires (Unix seconds).
    pub not_after: i64,
    /// The names it covers, comma-separated.
    pub dns_names: String,
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
        let ca_key = KeyPair::generate()?;
        let params = ca_params(now - time::Duration::minutes(5));
        let ca_cert = params.self_signed(&ca_key)?;
        let mut material = Self {
            ca_cert: ca_cert.pem(),
            ca_not_after: seconds(params.not_after),
            ca_key: ca_key.serialize_pem(),
            previous_ca: None,
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

    /// What must change at `now`, if anything: a new CA when it is due
    /// (the old one kept in the bundle), a new serving certificate when it
    /// is due or covers other names. `None` when nothing is due.
    pub fn renewed(&self, dns_names: &[String], now: OffsetDateTime) -> Result<Option<Self>, CertError> {
        let left = |not_after: i64| time::Duration::seconds(not_after - seconds(now));
        let ca_due = left(self.ca_not_after) < time::Duration::days(CA_RENEW_DAYS);
        let cert_due = left(self.not_after) < time::Duration::days(SERVING_RENEW_DAYS)
            || self.dns_names != dns_names.join(",");
        let previous_expired = self
            .previous_ca
            .as_ref()
            .is_some_and(|(_, not_after)| left(*not_after) <= time::Duration::ZERO);
        if !ca_due && !cert_due && !previous_expired {
            return Ok(None);
        }
        let mut next = self.clone();
        if previous_expired {
            next.previous_ca = None;
        }
        if ca_due {
            let fresh = Self::new(dns_names, now)?;
            next = Self {
                previous_ca: (left(self.ca_not_after) > time::Duration::ZERO)
                    .then(|| (self.ca_cert.clone(), self.ca_not_after)),
                ..fresh
            };
        } else if cert_due {
            next.sign(dns_names, now)?;
        }
        Ok(Some(next))
    }

    /// The PEM bundle the webhook's clients trust.
    pub fn bundle(&self) -> String {
        let mut bundle = self.ca_cert.clone();
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
        Some(Self {
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
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                resource_version: found.as_ref().and_then(|s| s.metadata.resource_version.clone()),
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
        serving
            .load(&material.cert, &material.key)
            .map_err(|e| KeepError::Load(e.to_string()))?;
        if !self.publish(&material.bundle()).await? {
            return Err(KeepError::NoConfiguration(self.configuration.clone()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
