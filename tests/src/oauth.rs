//! A real authorization server for the auth tests: `oidc-provider` (pinned
//! in `tests/peers/`), driven by `tests/peers/authorization-server.mjs`.

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};

use crate::client::{Http, http, json_body, send};
use crate::procs::Proc;
use crate::root;

/// A running authorization server.
#[derive(Debug)]
pub struct AuthServer {
    /// The process.
    pub proc: Proc,
    /// Its issuer URL (no trailing slash).
    pub issuer: String,
    http: Http,
}

impl AuthServer {
    /// Starts one issuing JWT access tokens for each of `resources`.
    pub async fn start(resources: &[&str]) -> AuthServer {
        Self::start_with(resources, &[]).await
    }

    /// [`AuthServer::start`] with more arguments for the script.
    pub async fn start_with(resources: &[&str], extra: &[&str]) -> AuthServer {
        let script = root().join("tests/peers/authorization-server.mjs");
        assert!(
            root().join("tests/peers/node_modules/oidc-provider").exists(),
            "test peers not installed: run tests/peers/install.sh"
        );
        let spawn = || {
            let mut cmd = tokio::process::Command::new("node");
            cmd.arg(&script).args(["--port", "0"]);
            for resource in resources {
                cmd.args(["--resource", resource]);
            }
            cmd.args(extra);
            Proc::spawn(cmd)
        };
        let issuer = |l: &str| l.strip_prefix("issuer ").map(str::to_owned);
        // Node loading oidc-provider on two busy cores, next to a dozen
        // others, has once stayed silent past 30 s: one more start before
        // giving up (a server that fails twice still fails the test).
        let proc = spawn();
        if let Some(found) = proc
            .try_wait_line(std::time::Duration::from_secs(30), issuer)
            .await
        {
            return AuthServer {
                proc,
                issuer: found,
                http: http(),
            };
        }
        eprintln!(
            "authorization server silent for 30 s; starting another:\n{}",
            proc.output()
        );
        drop(proc);
        let proc = spawn();
        let found = proc.wait_line("the authorization server to listen", issuer).await;
        AuthServer {
            proc,
            issuer: found,
            http: http(),
        }
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: String) -> (u16, Value) {
        let url = format!("{}{path}", self.issuer);
        let response = send(&self.http, Method::POST, &url, headers, Bytes::from(body)).await;
        let status = response.status().as_u16();
        (status, json_body(response).await)
    }

    /// An access token from the client credentials grant of `client`
    /// (`alice` or `bob`, whose secret is `<client>-secret`) for `resource`.
    pub async fn token(&self, client: &str, resource: &str, scope: &str) -> String {
        let basic = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{client}:{client}-secret")
            )
        );
        let form = format!(
            "grant_type=client_credentials&resource={}&scope={}",
            urlencode(resource),
            urlencode(scope)
        );
        let (status, body) = self
            .post(
                "/token",
                &[
                    ("authorization", &basic),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form,
            )
            .await;
        assert_eq!(status, 200, "token request refused: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// `claims` signed with the server's current key (or forged as `forge`
    /// says: `none`, `hs256-public`), with header fields overridden by `header`.
    pub async fn sign(&self, claims: Value, header: Value, forge: Option<&str>) -> String {
        let mut request = json!({"claims": claims, "header": header});
        if let Some(forge) = forge {
            request["forge"] = json!(forge);
        }
        let (status, body) = self
            .post(
                "/test/sign",
                &[("content-type", "application/json")],
                request.to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// A new signing key; the old one stays published when `keep_old`.
    /// Returns the new key id.
    pub async fn rotate(&self, keep_old: bool) -> String {
        let (status, body) = self
            .post(
                "/test/rotate",
                &[("content-type", "application/json")],
                json!({"keepOld": keep_old}).to_string(),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["kid"].as_str().unwrap().to_owned()
    }

    /// How often its JWKS was fetched.
    pub async fn jwks_fetches(&self) -> u64 {
        self.stat("jwks").await
    }

    /// One of its counters (`jwks`, `token`, `exchange`, ...).
    pub async fn stat(&self, name: &str) -> u64 {
        let url = format!("{}/test/stats", self.issuer);
        let response = send(&self.http, Method::GET, &url, &[], Bytes::new()).await;
        json_body(response).await[name].as_u64().unwrap()
    }
}

/// Percent-encodes a form value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT's claims, read without verifying it (for assertions on tokens the
/// tests were handed).
pub fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
