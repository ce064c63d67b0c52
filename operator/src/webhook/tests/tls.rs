//! The webhook over TLS, with the operator's own certificate renewed under
//! it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;

use super::{Map, applied, review_of};
use crate::certs::{Material, dns_names};
use crate::fixtures::pod;
use crate::render::Defaults;
use crate::webhook::{Admission, Certificates, Webhook, tls_config};

const HOST: &str = "shadowcat-webhook.shadowcat-system.svc";

/// Connects over TLS trusting `bundle` (PEM), POSTs `body` to `/mutate`,
/// and returns the status, the body and the certificate the server showed.
async fn call(port: u16, bundle: &str, body: Vec<u8>) -> Result<(u16, Vec<u8>, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(HOST).unwrap();
    let tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    let shown = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Ok((status, bytes, shown))
}

/// The webhook over TLS with the operator's own certificate; renewed (a
/// new CA too), the next handshake shows the new certificate, which a
/// client trusting the bundle accepts and one trusting only the old CA
/// refuses; the server never stopped.
#[tokio::test]
async fn tls_serves_the_certificate_and_its_renewal() {
    let names = dns_names("shadowcat-webhook", "shadowcat-system");
    let now = OffsetDateTime::now_utc();
    let first = Material::new(&names, now).unwrap();
    let certificates = Arc::new(Certificates::default());
    assert!(!certificates.ready());
    assert!(certificates.load(&first.cert, &first.key).unwrap());
    assert!(
        !certificates.load(&first.cert, &first.key).unwrap(),
        "the same again is no change"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let webhook = Arc::new(Webhook {
        lookup: Map::with([applied()]),
        admission: Admission::lenient(Defaults::default()),
        metrics: Arc::default(),
    });
    let server = tokio::spawn(webhook.clone().serve(listener, tls_config(certificates.clone())));

    let (status, body, shown) = call(port, &first.bundle(), review_of(&pod("p", None), "CREATE"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: AdmissionReview<DynamicObject> = serde_json::from_slice(&body).unwrap();
    assert!(answer.response.unwrap().patch.is_some());
    let first_der = CertificateDer::pem_slice_iter(first.cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(shown, first_der.to_vec());
    let (status, _, _) = call(port, &first.bundle(), b"{".to_vec()).await.unwrap();
    assert_eq!(status, 200, "an invalid review is an answer, not a failure");

    // Say the CA had 50 days left (under the 60 that renew it): a
    // successor joins the bundle; an hour on, it signs, the old one still
    // in the bundle. (Now, not 315 days on: the client checks validity
    // against the real clock.)
    let aging = Material {
        ca_not_after: (now + time::Duration::days(50)).unix_timestamp(),
        ..first.clone()
    };
    let joined = aging.renewed(&names, now).unwrap().expect("due");
    assert_eq!(joined.cert, first.cert, "the successor signs nothing yet");
    let joined = joined.published(now - time::Duration::hours(2)).unwrap();
    let renewed = joined.renewed(&names, now).unwrap().expect("takes over");
    assert_ne!(renewed.ca_cert, first.ca_cert);
    assert_eq!(renewed.previous_ca.as_ref().map(|p| &p.0), Some(&first.ca_cert));
    assert!(certificates.load(&renewed.cert, &renewed.key).unwrap());
    let (status, _, shown) = call(port, &renewed.bundle(), review_of(&pod("p", None), "CREATE"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_ne!(shown, first_der.to_vec(), "the renewed certificate");
    let refused = call(port, &first.ca_cert, review_of(&pod("p", None), "CREATE")).await;
    assert!(
        refused.is_err(),
        "a client trusting only the old CA refuses the new certificate"
    );
    assert!(!server.is_finished());
    server.abort();
}
