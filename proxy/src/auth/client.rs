//! A small HTTP(S) client for the authorization server: its metadata and its
//! keys. Answers are bounded in size and time.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::OnceCell;

/// Largest document accepted from the authorization server.
const MAX_DOCUMENT: usize = 1024 * 1024;
/// Time for one request, answer included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Talks to the authorization server.
#[derive(Clone, Debug)]
pub struct AsClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl AsClient {
    /// A client trusting the system's roots and the CAs in `ca_file`.
    pub fn new(ca_file: Option<&str>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            // A system certificate rustls cannot use is skipped, as browsers do.
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("invalid config `auth.caFile`: cannot read {path}: {e}"))?;
            for cert in certs {
                let cert = cert.map_err(|e| anyhow::anyhow!("invalid config `auth.caFile`: {path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("invalid config `auth.caFile`: {path}: {e}"))?;
            }
        }
        let tls =
            rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
                .with_safe_default_protocol_versions()
                .map_err(|e| anyhow::anyhow!("TLS setup: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(TIMEOUT));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        })
    }

    /// GETs `url` and reads its JSON answer; `Ok(None)` on 404 (a metadata
    /// location the server does not use).
    pub async fn get_json(&self, url: &str) -> Result<Option<Value>, String> {
        let request = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::default())
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        match self.send(request).await {
            Ok((StatusCode::NOT_FOUND, _)) => Ok(None),
            Ok((status, _)) if !status.is_success() => Err(format!("GET {url}: answered {status}")),
            Ok((_, body)) => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("GET {url}: not JSON: {e}")),
            Err(e) => Err(format!("GET {url}: {e}")),
        }
    }

    /// POSTs a form with HTTP basic client authentication (RFC 6749 §2.3.1)
    /// and returns the status and the JSON answer (`Null` when not JSON).
    pub async fn post_form(
        &self,
        url: &str,
        client: (&str, &str),
        form: &[(&str, &str)],
    ) -> Result<(StatusCode, Value), String> {
        use base64::Engine;
        // RFC 6749 §2.3.1: the id and secret are form-encoded first.
        let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(client.0),
            encode(client.1)
        ));
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = Request::post(url)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad URL {url}: {e}"))?;
        let (status, body) = self.send(request).await.map_err(|e| format!("POST {url}: {e}"))?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }

    /// Sends a request; the answer is bounded in size and time.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::upstream::describe(&e))?;
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_DOCUMENT)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?
                .to_bytes();
            Ok((status, body))
        };
        tokio::time::timeout(TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {TIMEOUT:?}")))
    }
}

/// Shadowcat as a confidential client of the authorization server at one of
/// its endpoints (introspection, token), authenticating with a secret read
/// from a file at startup. The endpoint is configured or found in the
/// issuer's metadata under `field` on first use.
pub struct ClientEndpoint {
    client: AsClient,
    issuer: String,
    field: &'static str,
    client_id: String,
    secret: String,
    endpoint: OnceCell<String>,
}

impl std::fmt::Debug for ClientEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientEndpoint")
            .field("endpoint", &self.field)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl ClientEndpoint {
    /// `config` names the config block, for errors (an unreadable secret
    /// file is one, at startup).
    pub fn new(
        client: AsClient,
        issuer: &str,
        field: &'static str,
        endpoint: Option<&str>,
        (client_id, secret_file): (&str, &str),
        config: &str,
    ) -> anyhow::Result<Self> {
        let secret = std::fs::read_to_string(secret_file)
            .map_err(|e| {
                anyhow::anyhow!("invalid config `{config}.clientSecretFile`: cannot read {secret_file}: {e}")
            })?
            .trim_end()
            .to_owned();
        let cell = OnceCell::new();
        if let Some(url) = endpoint {
            let _ = cell.set(url.to_owned());
        }
        Ok(Self {
            client,
            issuer: issuer.to_owned(),
            field,
            client_id: client_id.to_owned(),
            secret,
            endpoint: cell,
        })
    }

    /// POSTs `form` to the endpoint, authenticated as the client.
    pub async fn post(&self, form: &[(&str, &str)]) -> Result<(StatusCode, Value), String> {
        let endpoint = self
            .endpoint
            .get_or_try_init(|| async {
                let (location, metadata) = super::keys::discover(&self.client, &self.issuer).await?;
                metadata
                    .get(self.field)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{location} has no {}", self.field))
            })
            .await?;
        self.client
            .post_form(endpoint, (&self.client_id, &self.secret), form)
            .await
    }
}
