//! The mutating admission webhook: `POST /mutate` over TLS, one
//! `AdmissionReview` per pod created with the label `shadowcat.dev/proxy`.
//! Every operator replica serves it, leader or not.
//!
//! A pod the sidecar cannot be added to (its McpProxy missing, not applied,
//! or the pod clashing with it) is refused under the webhook's failurePolicy
//! `Fail`, so one that opted in never runs without its front door; under
//! `Ignore` it is admitted without, marked with the reason, and counted in
//! the McpProxy's status. A pod whose McpProxy is being deleted is admitted
//! without the sidecar either way: that front door is going on purpose.
//! When the McpProxy cannot be read at all the answer is a 500, so the API
//! server applies the failure policy.

use std::convert::Infallible;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client, ResourceExt};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use shadowcat_crds::McpProxy;

use crate::inject::{self, Injection};
use crate::metrics::Metrics;
use crate::render::{self, Defaults, PROXY_LABEL};
use crate::status::{ACCEPTED, CONFIG_VALID};

/// The largest AdmissionReview read (a pod with a big spec is well under).
const MAX_REVIEW_BYTES: usize = 8 << 20;

/// Finds McpProxies (the API in production, a map in tests).
pub trait Lookup: Send + Sync {
    /// McpProxy `name` in `ns`, if it exists.
    fn proxy(&self, ns: &str, name: &str) -> impl Future<Output = kube::Result<Option<McpProxy>>> + Send;
}

impl Lookup for Client {
    async fn proxy(&self, ns: &str, name: &str) -> kube::Result<Option<McpProxy>> {
        Api::<McpProxy>::namespaced(self.clone(), ns).get_opt(name).await
    }
}

/// The answer to one review: the review, or a failure the API server should
/// treat by the failure policy.
pub type Answer = Result<AdmissionReview<DynamicObject>, String>;

/// How the webhook decides.
#[derive(Clone, Debug)]
pub struct Admission {
    /// Operator defaults (image, allow-list, pull secrets, drain).
    pub defaults: Defaults,
    /// Refuse a pod the sidecar cannot be added to, instead of admitting it
    /// without (the webhook's `failurePolicy` is `Fail`: a pod that opted in
    /// never runs without its front door).
    pub deny_without_sidecar: bool,
    /// How long reading the McpProxy may take: under the API server's own
    /// timeout for the webhook, so it gets an answer it can act on.
    pub lookup_timeout: Duration,
}

impl Admission {
    /// With `defaults`, admitting pods it cannot inject, a 5 s lookup.
    pub fn lenient(defaults: Defaults) -> Self {
        Self {
            defaults,
            deny_without_sidecar: false,
            lookup_timeout: Duration::from_secs(5),
        }
    }
}

/// Reasons of `Accepted=False` that keep the sidecar from running: the
/// ConfigMap it mounts is someone else's or was never written, or its image
/// is not allowed. (A Service or NetworkPolicy that could not be applied,
/// or a rollout annotation another manager owns, leaves the sidecar whole.)
const BLOCKING: [&str; 4] = [
    "Conflict",
    "ImageNotAllowed",
    "ConfigMapNotOwned",
    "ConfigMapRejected",
];

/// Answers the AdmissionReview in `body`.
pub async fn review(body: &[u8], lookup: &impl Lookup, admission: &Admission, metrics: &Metrics) -> Answer {
    let defaults = &admission.defaults;
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(e) => {
            metrics.admitted("invalid");
            return Ok(
                AdmissionResponse::invalid(format!("not an AdmissionReview of a Pod: {e}")).into_review(),
            );
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            metrics.admitted("invalid");
            return Ok(AdmissionResponse::invalid("an AdmissionReview without a request").into_review());
        }
    };
    let allow = AdmissionResponse::from(&request);
    let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
        return Ok(allow.into_review());
    };
    let Some(name) = pod.labels().get(PROXY_LABEL).cloned() else {
        return Ok(allow.into_review());
    };
    let ns = request
        .namespace
        .clone()
        .or_else(|| pod.namespace())
        .unwrap_or_default();
    // Admitted without the sidecar: the reason goes to the creator as a
    // warning and onto the pod as an annotation, where `kubectl describe`
    // and the McpProxy's status (its `Injected` condition) show it; a
    // ReplicaSet's warnings reach no one.
    let admit_without = |outcome: &'static str, why: String, deny: bool| {
        if deny {
            metrics.admitted(match outcome {
                "no_proxy" => "denied_no_proxy",
                "refused" => "denied_refused",
                _ => "denied_not_applied",
            });
            tracing::warn!(namespace = %ns, proxy = %name, why, "pod refused: no sidecar can be added");
            let message = format!(
                "shadowcat: the sidecar cannot be added ({why}); the pod is refused rather than run without \
                 it (webhook failurePolicy Fail), and is created once this is fixed"
            );
            return Ok(AdmissionResponse::from(&request).deny(message).into_review());
        }
        metrics.admitted(outcome);
        tracing::warn!(namespace = %ns, proxy = %name, why, "pod admitted without the sidecar");
        let mut marked = pod.clone();
        marked
            .annotations_mut()
            .insert(inject::SKIPPED.into(), inject::truncate(&why, 512));
        let (Ok(before), Ok(after)) = (serde_json::to_value(pod), serde_json::to_value(&marked)) else {
            return Err("cannot serialize the pod".to_owned());
        };
        let mut response = AdmissionResponse::from(&request)
            .with_patch(json_patch::diff(&before, &after))
            .map_err(|e| e.to_string())?;
        response.warnings = Some(vec![format!("shadowcat: no sidecar: {why}")]);
        Ok(response.into_review())
    };
    let without =
        |outcome: &'static str, why: String| admit_without(outcome, why, admission.deny_without_sidecar);
    // Within the API server's own timeout for the webhook (10 s by
    // default): an answer it can act on rather than its timeout.
    let found = tokio::time::timeout(admission.lookup_timeout, lookup.proxy(&ns, &name))
        .await
        .unwrap_or_else(|_| {
            Err(kube::Error::Service(
                "no answer from the API server in time".into(),
            ))
        });
    let proxy = match found {
        Ok(Some(proxy)) => proxy,
        Ok(None) => {
            let why = format!(
                "McpProxy {ns}/{name} not found (to run this workload without Shadowcat, take the label \
                 {PROXY_LABEL} off its pod template)"
            );
            return without("no_proxy", why);
        }
        Err(e) => {
            metrics.admitted("error");
            tracing::warn!(namespace = %ns, proxy = %name, error = %e, "cannot read the McpProxy");
            return Err(format!("cannot read McpProxy {ns}/{name}: {e}"));
        }
    };
    if proxy.metadata.deletion_timestamp.is_some() {
        // Going on purpose: the workload's pods must go on being created.
        let why = format!("McpProxy {ns}/{name} is being deleted");
        return admit_without("not_applied", why, false);
    }
    if let Some(why) = not_applied(&proxy, defaults) {
        return without(
            "not_applied",
            format!("McpProxy {ns}/{name} is not applied: {why}"),
        );
    }
    // The config the pod will mount is the ConfigMap's, which holds what
    // the last reconcile wrote: status's hash names it (a spec changed
    // since is not in the ConfigMap yet, so the pod is not counted as on
    // it).
    let Some(hash) = proxy.status.as_ref().and_then(|s| s.config_hash.clone()) else {
        return without(
            "not_applied",
            format!("McpProxy {ns}/{name} has not been reconciled yet (no status.configHash)"),
        );
    };
    // The sidecar container is rendered from the spec, its config comes
    // from the ConfigMap: when they differ (a change not reconciled yet, or
    // one stopped by a missing Secret) a pod could listen where its config
    // does not. Under Fail it waits (its ReplicaSet retries); under Ignore
    // it gets the sidecar as the spec now says, rather than none.
    let (_, spec_hash) = render::config_yaml(&render::sidecar_config(&proxy, defaults))
        .map_err(|e| format!("cannot render McpProxy {ns}/{name}: {e}"))?;
    if admission.deny_without_sidecar && spec_hash != hash {
        return without(
            "not_applied",
            format!("McpProxy {ns}/{name} changed since its ConfigMap was written; retried once it is"),
        );
    }
    match inject::inject(pod, &proxy, defaults, &hash) {
        Injection::Already => {
            metrics.admitted("already");
            Ok(allow.into_review())
        }
        Injection::Refused(why) => without("refused", why),
        Injection::Injected {
            pod: injected,
            warnings,
        } => {
            let (before, after) = match (serde_json::to_value(pod), serde_json::to_value(&injected)) {
                (Ok(before), Ok(after)) => (before, after),
                _ => return Err("cannot serialize the pod".into()),
            };
            let mut response = allow
                .with_patch(json_patch::diff(&before, &after))
                .map_err(|e| e.to_string())?;
            if !warnings.is_empty() {
                response.warnings = Some(warnings.into_iter().map(|w| format!("shadowcat: {w}")).collect());
            }
            metrics.admitted("injected");
            tracing::info!(namespace = %ns, proxy = %name, config_hash = %hash, "sidecar injected");
            Ok(response.into_review())
        }
    }
}

/// Why `proxy`'s sidecar cannot run as it stands, if so: its ports clash,
/// its image is not allowed, or its status says its spec is invalid
/// (`ConfigValid=False`) or the ConfigMap the sidecar mounts is not its own
/// or was not written (`Accepted=False` for a [`BLOCKING`] reason).
fn not_applied(proxy: &McpProxy, defaults: &Defaults) -> Option<String> {
    if let Some(why) = proxy.spec.port_clash().or_else(|| proxy.spec.env_problem()) {
        return Some(why);
    }
    if let Some(why) = defaults.image_refusal(proxy) {
        return Some(why);
    }
    let conditions = proxy
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .iter()
        .filter(|c| c.status == "False")
        // An invalid policy leaves the ConfigMap with the last good one, and
        // the sidecar does not depend on it: not blocking.
        .find(|c| {
            (c.type_ == CONFIG_VALID && c.reason != "InvalidPolicy")
                || (c.type_ == ACCEPTED && BLOCKING.contains(&c.reason.as_str()))
        })
        .map(|c| format!("{} ({})", c.reason, c.message))
}

/// The serving certificate, swapped in place when it is renewed: new
/// handshakes get the new one, open connections keep theirs.
#[derive(Debug, Default)]
pub struct Certificates {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

/// A certificate or key that does not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not PEM, or no certificate in it.
    #[error("certificate: {0}")]
    Cert(String),
    /// Not a PEM private key rustls can sign with.
    #[error("key: {0}")]
    Key(String),
}

impl Certificates {
    /// Loads a PEM certificate chain and key; `Ok(false)` when they are
    /// what is loaded already.
    pub fn load(&self, cert_pem: &str, key_pem: &str) -> Result<bool, LoadError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| LoadError::Cert(e.to_string()))?;
        if chain.is_empty() {
            return Err(LoadError::Cert("no certificate in the PEM".into()));
        }
        if self
            .current()
            .is_some_and(|loaded| loaded.cert.first() == chain.first())
        {
            return Ok(false);
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| LoadError::Key(e.to_string()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| LoadError::Key(e.to_string()))?;
        let certified = Arc::new(CertifiedKey::new(chain, signer));
        if let Ok(mut current) = self.current.write() {
            *current = Some(certified);
        }
        Ok(true)
    }

    /// The certificate in force, if one is loaded.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    /// Whether a certificate is loaded (the operator is not ready before).
    pub fn ready(&self) -> bool {
        self.current().is_some()
    }

    /// Reloads `tls.crt` and `tls.key` from `dir` (a mounted cert-manager
    /// Secret the kubelet updates in place) every 30 s, for as long as the
    /// operator runs.
    pub async fn watch_dir(self: Arc<Self>, dir: PathBuf) {
        loop {
            let read = |name: &str| std::fs::read_to_string(dir.join(name));
            match (read("tls.crt"), read("tls.key")) {
                (Ok(cert), Ok(key)) => match self.load(&cert, &key) {
                    Ok(true) => tracing::info!(dir = %dir.display(), "webhook certificate loaded"),
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "webhook certificate does not load")
                    }
                },
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "webhook certificate not readable")
                }
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The TLS settings the webhook serves with: HTTP/2 or HTTP/1.1, the
/// certificate from `certificates`.
pub fn tls_config(certificates: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_no_client_auth().with_cert_resolver(certificates))
            .unwrap_or_else(|_| {
                // The ring provider supports the default versions; unreachable.
                rustls::ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(Arc::new(Certificates::default()))
            });
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What the webhook server needs.
pub struct Webhook<L> {
    /// Finds McpProxies.
    pub lookup: L,
    /// How it decides.
    pub admission: Admission,
    /// Admission counts.
    pub metrics: Arc<Metrics>,
}

impl<L: Lookup + 'static> Webhook<L> {
    /// Serves `POST /mutate` on `listener` over TLS until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener, tls: Arc<rustls::ServerConfig>) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, never spin.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, webhook) = (acceptor.clone(), self.clone());
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let service = hyper::service::service_fn(move |req| {
                    let webhook = webhook.clone();
                    async move { Ok::<_, Infallible>(webhook.handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: Vec<u8>, json: bool| {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            let kind = if json {
                "application/json"
            } else {
                "text/plain; charset=utf-8"
            };
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(kind),
            );
            response
        };
        match (req.method(), req.uri().path()) {
            (&hyper::Method::POST, "/mutate") => {}
            (_, "/mutate") => {
                return reply(StatusCode::METHOD_NOT_ALLOWED, b"POST /mutate\n".to_vec(), false);
            }
            _ => return reply(StatusCode::NOT_FOUND, b"not found\n".to_vec(), false),
        }
        let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES).collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                let message =
                    format!("cannot read the AdmissionReview (at most {MAX_REVIEW_BYTES} bytes): {e}\n");
                return reply(StatusCode::BAD_REQUEST, message.into_bytes(), false);
            }
        };
        match review(&body, &self.lookup, &self.admission, &self.metrics).await {
            Ok(review) => match serde_json::to_vec(&review) {
                Ok(json) => reply(StatusCode::OK, json, true),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    e.to_string().into_bytes(),
                    false,
                ),
            },
            Err(why) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{why}\n").into_bytes(),
                false,
            ),
        }
    }
}

#[cfg(test)]
mod tests;
