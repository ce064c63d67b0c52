//! Test objects and a fake API server, controller-rs style: a scenario lists
//! every call the reconciler must make — method, path, a check on the body —
//! and the answer to give; the fake server checks them in order, with a
//! timeout, and fails on anything else.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use shadowcat_crds::{
    AuditConfig, AuthSpec, Decision, IntrospectionSpec, LimitKey, McpProxy, McpProxySpec, PolicyConfig,
    RateLimitConfig, RedisSpec, RuleConfig, ScopesConfig, SecretKeyRef, ServiceSpec, ServiceType,
    SessionsSpec, StoreKind, TargetKind, TargetRef, TokenExchangeSpec, ToolsConfig, UpstreamCredentialSpec,
};

pub mod cluster;

use crate::controller::{Context, FINALIZER};
use crate::render::Defaults;

/// Test McpProxies, built by chained calls.
pub struct Proxy(pub McpProxy);

impl Proxy {
    /// `tools/weather` targeting Deployment `mcp-server` (no finalizer: a
    /// `rollout: manual` McpProxy holds none).
    pub fn new() -> Self {
        Self::named("weather")
    }

    /// The same, named `name`.
    pub fn named(name: &str) -> Self {
        let spec = McpProxySpec {
            target_ref: TargetRef {
                kind: TargetKind::Deployment,
                name: "mcp-server".into(),
            },
            upstream: Default::default(),
            listen: Default::default(),
            service: None,
            rollout: Default::default(),
            network_policy: None,
            sessions: Default::default(),
            replay: Default::default(),
            sidecar: Default::default(),
            auth: None,
            policy: None,
        };
        let mut proxy = McpProxy::new(name, spec);
        proxy.metadata.namespace = Some("tools".into());
        proxy.metadata.uid = Some("uid-1".into());
        proxy.metadata.generation = Some(1);
        Self(proxy)
    }

    /// Without the finalizer (just created).
    pub fn fresh(mut self) -> Self {
        self.0.metadata.finalizers = None;
        self
    }

    /// Marked for deletion.
    pub fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        self
    }

    /// Using Redis.
    pub fn redis(mut self) -> Self {
        self.0.spec.sessions = SessionsSpec {
            store: StoreKind::Redis,
            redis: Some(RedisSpec {
                url_secret_ref: SecretKeyRef {
                    name: "redis".into(),
                    key: "url".into(),
                },
                key_prefix: Some("team-a".into()),
            }),
            idle_timeout: Some("45m".into()),
        };
        self
    }

    /// Fronted by a Service on port 8000.
    pub fn service(mut self) -> Self {
        self.0.spec.service = Some(ServiceSpec {
            name: None,
            port: Some(8000),
            type_: Some(ServiceType::ClusterIP),
        });
        self
    }

    /// Targeting a StatefulSet.
    pub fn stateful(mut self) -> Self {
        self.0.spec.target_ref.kind = TargetKind::StatefulSet;
        self
    }

    /// With the sidecar's image, log level and resources overridden.
    pub fn overrides(mut self) -> Self {
        self.0.spec.sidecar.image = Some("registry.example/shadowcat:1.2.3".into());
        self.0.spec.sidecar.log_level = Some("debug".into());
        self.0.spec.sidecar.resources = Some(k8s_openapi::api::core::v1::ResourceRequirements::default());
        self
    }

    /// With an idle timeout the sidecar would refuse.
    pub fn invalid(mut self) -> Self {
        self.0.spec.sessions.idle_timeout = Some("0s".into());
        self
    }

    /// Verifying tokens from a private issuer (its CAs in Secret `corp-ca`),
    /// sending the MCP server a credential from Secret `mcp-credential`.
    pub fn auth(mut self) -> Self {
        let strings = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        self.0.spec.auth = Some(AuthSpec {
            issuer: "https://auth.example.com/realms/mcp".into(),
            jwks_url: None,
            resource: "https://mcp.example.com/mcp".into(),
            audiences: strings(&["mcp-gateway"]),
            algorithms: Some(strings(&["RS256", "ES256"])),
            leeway: Some("1m".into()),
            scopes: Some(ScopesConfig {
                default: Some(strings(&["mcp"])),
                tools: Some([("delete_repo".to_owned(), strings(&["mcp:admin"]))].into()),
                ..Default::default()
            }),
            claim_headers: [("sub".to_owned(), "X-Mcp-Subject".to_owned())].into(),
            ca_secret_ref: Some(SecretKeyRef {
                name: "corp-ca".into(),
                key: "root-bundle.pem".into(),
            }),
            introspection: None,
            upstream_credential: Some(UpstreamCredentialSpec {
                header: "X-Api-Key".into(),
                secret_ref: Some(SecretKeyRef {
                    name: "mcp-credential".into(),
                    key: "api-key".into(),
                }),
                token_exchange: None,
            }),
        });
        self
    }

    /// Checking opaque tokens by introspection, the client's secret in
    /// Secret `introspection-client` (call after `auth`).
    pub fn introspection(mut self) -> Self {
        if let Some(auth) = &mut self.0.spec.auth {
            auth.introspection = Some(IntrospectionSpec {
                client_id: "shadowcat".into(),
                client_secret_ref: SecretKeyRef {
                    name: "introspection-client".into(),
                    key: "idp-secret".into(),
                },
                endpoint: Some("https://auth.example.com/realms/mcp/introspect".into()),
            });
        }
        self
    }

    /// With the upstream credential by token exchange instead of from
    /// Secret `mcp-credential`, the client's secret in Secret
    /// `exchange-client` (call after `auth`).
    pub fn token_exchange(mut self) -> Self {
        if let Some(credential) = self.credential_mut() {
            credential.header = "Authorization".into();
            credential.secret_ref = None;
            credential.token_exchange = Some(TokenExchangeSpec {
                audience: "https://tools.internal/mcp".into(),
                client_id: "shadowcat".into(),
                client_secret_ref: SecretKeyRef {
                    name: "exchange-client".into(),
                    key: "exchange-secret".into(),
                },
                scope: Some("tools:read".into()),
                token_endpoint: None,
            });
        }
        self
    }

    /// With the upstream credential from Secret `mcp-credential` and by
    /// token exchange at once, which the spec's rule refuses (call after
    /// `auth`).
    pub fn both_credential_sources(self) -> Self {
        let secret_ref = self.credential().and_then(|c| c.secret_ref.clone());
        let mut both = self.token_exchange();
        if let Some(credential) = both.credential_mut() {
            credential.secret_ref = secret_ref;
        }
        both
    }

    /// With an upstream credential header but no source for its value,
    /// which the spec's rule refuses (call after `auth`).
    pub fn no_credential_source(mut self) -> Self {
        if let Some(credential) = self.credential_mut() {
            credential.secret_ref = None;
            credential.token_exchange = None;
        }
        self
    }

    fn credential(&self) -> Option<&UpstreamCredentialSpec> {
        self.0.spec.auth.as_ref()?.upstream_credential.as_ref()
    }

    fn credential_mut(&mut self) -> Option<&mut UpstreamCredentialSpec> {
        self.0.spec.auth.as_mut()?.upstream_credential.as_mut()
    }

    /// With `spec.auth.resource` set to `resource` (call after `auth`).
    pub fn resource(mut self, resource: &str) -> Self {
        if let Some(auth) = &mut self.0.spec.auth {
            auth.resource = resource.into();
        }
        self
    }

    /// With another replay retention (another config hash).
    pub fn retention(mut self, retention: &str) -> Self {
        self.0.spec.replay.retention = Some(retention.into());
        self
    }

    /// With another retention for finished response streams.
    pub fn response_retention(mut self, retention: &str) -> Self {
        self.0.spec.replay.response_retention = Some(retention.into());
        self
    }

    /// With a policy: members of `mcp-readers` call only `get*` tools,
    /// `admin_*` tools hidden, 60 tool calls a minute per principal, audit
    /// events on stdout.
    pub fn policy(mut self) -> Self {
        self.0.spec.policy = Some(PolicyConfig {
            rules: vec![RuleConfig {
                id: "readers-read-only".into(),
                when: "method == 'tools/call' && 'mcp-readers' in principal.claims.groups \
                       && !name.startsWith('get')"
                    .into(),
                action: Decision::Deny,
                message: Some("read-only".into()),
            }],
            tools: Some(ToolsConfig {
                exclude: vec!["admin_*".into()],
                ..Default::default()
            }),
            rate_limits: vec![RateLimitConfig {
                id: "per-user".into(),
                key: vec![LimitKey::Principal],
                when: Some("method == 'tools/call'".into()),
                requests: 60,
                per: Some("1m".into()),
                burst: None,
            }],
            audit: Some(AuditConfig {
                to: "stdout".into(),
                arguments: None,
                redact: None,
            }),
            ..Default::default()
        });
        self
    }

    /// With the policy's rule limited to `tool` (another policy, the rest of
    /// the spec the same; call after `policy`).
    pub fn policy_tool(mut self, tool: &str) -> Self {
        if let Some(policy) = &mut self.0.spec.policy {
            policy.rules[0].when = format!("method == 'tools/call' && name == '{tool}'");
        }
        self
    }

    /// With a second rule whose CEL does not parse: `policy.rules[1].when`,
    /// line 1 (call after `policy`).
    pub fn invalid_policy(mut self) -> Self {
        if let Some(policy) = &mut self.0.spec.policy {
            policy.rules.push(RuleConfig {
                id: "broken".into(),
                when: "method == 'tools/call' &&".into(),
                action: Decision::Deny,
                message: None,
            });
        }
        self
    }

    /// With a NetworkPolicy: MCP from anywhere, metrics from namespace
    /// `monitoring`.
    pub fn network_policy(mut self) -> Self {
        use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
        self.0.spec.network_policy = Some(shadowcat_crds::NetworkPolicySpec {
            mcp_from: Vec::new(),
            admin_from: vec![NetworkPolicyPeer {
                namespace_selector: Some(LabelSelector {
                    match_labels: Some(
                        [("kubernetes.io/metadata.name".to_owned(), "monitoring".to_owned())].into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }],
        });
        self
    }

    /// Rolling the target on config changes, its finalizer in place.
    pub fn auto_rollout(mut self) -> Self {
        self.0.spec.rollout = shadowcat_crds::Rollout::Auto;
        self.finalized()
    }

    /// With the finalizer (put there by the operator, or an earlier version).
    pub fn finalized(mut self) -> Self {
        self.0.metadata.finalizers = Some(vec![FINALIZER.into()]);
        self
    }

    /// With status: `conditions` (type, status, reason) for generation 1,
    /// the hash of the config as it stands, and the rollout annotation on
    /// `rollout_target`, if any.
    pub fn status(mut self, conditions: &[(&str, &str, &str)], rollout_target: Option<&str>) -> Self {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        self.0.status = Some(shadowcat_crds::McpProxyStatus {
            conditions: conditions
                .iter()
                .map(|(type_, status, reason)| Condition {
                    type_: (*type_).into(),
                    status: (*status).into(),
                    reason: (*reason).into(),
                    message: String::new(),
                    observed_generation: Some(1),
                    last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
                })
                .collect(),
            config_hash: Some(
                crate::render::config_yaml(&crate::render::sidecar_config(&self.0, &Defaults::default()))
                    .map(|(_, hash)| hash)
                    .unwrap_or_default(),
            ),
            rollout_target: rollout_target.map(|name| TargetRef {
                kind: TargetKind::Deployment,
                name: name.into(),
            }),
            ..Default::default()
        });
        self
    }

    /// As an Arc, for reconcile.
    pub fn arc(self) -> Arc<McpProxy> {
        Arc::new(self.0)
    }
}

/// The target Deployment, `ready` of 3 replicas ready, its pod template
/// labelled for McpProxy `weather`.
pub fn deployment(ready: i32) -> Value {
    deployment_labelled(ready, Some("weather"))
}

/// The target Deployment, 3 of 3 ready, with what `managers` applied into
/// it on record (its managedFields).
pub fn deployment_managed_by(managers: &[&str]) -> Value {
    let mut d = deployment(3);
    d["metadata"]["managedFields"] = managers
        .iter()
        .map(|m| json!({"manager": m, "operation": "Apply", "apiVersion": "apps/v1"}))
        .collect();
    d
}

/// The target Deployment, its pod template labelled for `proxy` (or not).
pub fn deployment_labelled(ready: i32, proxy: Option<&str>) -> Value {
    let labels = std::collections::BTreeMap::from([("app".to_owned(), "mcp".to_owned())]);
    let mut template_labels = labels.clone();
    if let Some(proxy) = proxy {
        template_labels.insert("shadowcat.dev/proxy".into(), proxy.into());
    }
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some("mcp-server".into()),
            namespace: Some("tools".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(3),
            selector: LabelSelector {
                match_labels: Some(labels),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    ..Default::default()
                }),
                spec: None,
            },
            ..Default::default()
        },
        status: Some(DeploymentStatus {
            observed_generation: Some(1),
            ready_replicas: Some(ready),
            updated_replicas: Some(ready),
            ..Default::default()
        }),
    };
    serde_json::to_value(d).unwrap()
}

/// A Secret with `key` (a Redis URL).
pub fn secret(name: &str, key: &str) -> Value {
    secret_holding(name, key, "redis://r:6379")
}

/// A Secret whose `key` holds `value`.
pub fn secret_holding(name: &str, key: &str, value: &str) -> Value {
    let s = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("tools".into()),
            ..Default::default()
        },
        data: Some([(key.to_owned(), k8s_openapi::ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    serde_json::to_value(s).unwrap()
}

/// A pod of the target, labelled for `weather`: an MCP server container
/// on port 3000, with the sidecar when `injected` (as the webhook leaves
/// it, on config `hash`), ready or not.
pub fn pod(name: &str, injected: Option<&str>) -> Pod {
    let mut pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("tools".into()),
            labels: Some(
                [
                    ("app".to_owned(), "mcp".to_owned()),
                    ("shadowcat.dev/proxy".to_owned(), "weather".to_owned()),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "server".into(),
                image: Some("node:22-slim".into()),
                ports: Some(vec![ContainerPort {
                    container_port: 3000,
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    };
    if let Some(hash) = injected {
        let proxy = Proxy::new().0;
        if let crate::inject::Injection::Injected { pod: injected, .. } =
            crate::inject::inject(&pod, &proxy, &Defaults::default(), hash)
        {
            pod = *injected;
        }
    }
    pod
}

/// A list of `items` as the API answers it.
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
}

/// A 404 Status body.
pub fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

/// One expected call.
pub struct Call {
    /// HTTP method.
    pub method: &'static str,
    /// Path, without the query.
    pub path: String,
    /// Texts the query must hold.
    pub query: Vec<&'static str>,
    /// Assertions on the request body (JSON, or null).
    pub check: Box<dyn Fn(&Value) + Send>,
    /// Answer status.
    pub status: u16,
    /// Answer body.
    pub answer: Value,
}

impl Call {
    /// Expects `method path`, answering 200 with `answer`.
    pub fn new(method: &'static str, path: impl Into<String>, answer: Value) -> Self {
        Self {
            method,
            path: path.into(),
            query: Vec::new(),
            check: Box::new(|_| {}),
            status: 200,
            answer,
        }
    }

    /// Adds assertions on the request body.
    pub fn check(mut self, check: impl Fn(&Value) + Send + 'static) -> Self {
        self.check = Box::new(check);
        self
    }

    /// Expects `text` in the query (e.g. a field manager); again for more.
    pub fn query(mut self, text: &'static str) -> Self {
        self.query.push(text);
        self
    }

    /// Answers with another status.
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

/// Paths of the objects a scenario touches.
pub mod path {
    /// The McpProxy.
    pub const PROXY: &str = "/apis/shadowcat.dev/v1alpha1/namespaces/tools/mcpproxies/weather";
    /// Its status.
    pub const STATUS: &str = "/apis/shadowcat.dev/v1alpha1/namespaces/tools/mcpproxies/weather/status";
    /// The ConfigMap.
    pub const CONFIG_MAP: &str = "/api/v1/namespaces/tools/configmaps/weather-shadowcat";
    /// The target.
    pub const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/tools/deployments/mcp-server";
    /// ConfigMaps (list).
    pub const CONFIG_MAPS: &str = "/api/v1/namespaces/tools/configmaps";
    /// Services (list).
    pub const SERVICES: &str = "/api/v1/namespaces/tools/services";
    /// The Service of `Proxy::service`.
    pub const SERVICE: &str = "/api/v1/namespaces/tools/services/weather";
    /// NetworkPolicies (list).
    pub const NETWORK_POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/tools/networkpolicies";
    /// The NetworkPolicy of `Proxy::network_policy`.
    pub const NETWORK_POLICY: &str =
        "/apis/networking.k8s.io/v1/namespaces/tools/networkpolicies/weather-shadowcat";
    /// Pods (list).
    pub const PODS: &str = "/api/v1/namespaces/tools/pods";
    /// Events.
    pub const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/tools/events";
    /// The Redis URL Secret.
    pub const REDIS_SECRET: &str = "/api/v1/namespaces/tools/secrets/redis";
    /// The peer Secret.
    pub const PEER_SECRET: &str = "/api/v1/namespaces/tools/secrets/weather-shadowcat-peer";
    /// The authorization server's CA Secret (`Proxy::auth`).
    pub const CA_SECRET: &str = "/api/v1/namespaces/tools/secrets/corp-ca";
    /// The upstream credential's Secret (`Proxy::auth`).
    pub const CREDENTIAL_SECRET: &str = "/api/v1/namespaces/tools/secrets/mcp-credential";
    /// The introspection client's Secret (`Proxy::introspection`).
    pub const INTROSPECTION_SECRET: &str = "/api/v1/namespaces/tools/secrets/introspection-client";
    /// Secrets (create).
    pub const SECRETS: &str = "/api/v1/namespaces/tools/secrets";
}

/// A context whose client talks to a fake API server that plays `calls`.
pub fn scenario(calls: Vec<Call>) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    scenario_with(calls, Defaults::default())
}

/// The same, with operator defaults of the test's own.
pub fn scenario_with(calls: Vec<Call>, defaults: Defaults) -> (Arc<Context>, tokio::task::JoinHandle<()>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let server = tokio::spawn(async move {
        for (i, call) in calls.into_iter().enumerate() {
            let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
            let (request, reply) = next
                .unwrap_or_else(|_| panic!("call {i} ({} {}) never came", call.method, call.path))
                .unwrap_or_else(|| panic!("client gone before call {i}"));
            assert_eq!(
                (request.method().as_str(), request.uri().path()),
                (call.method, call.path.as_str()),
                "call {i}"
            );
            for text in &call.query {
                let query = request.uri().query().unwrap_or_default();
                assert!(
                    query.contains(text),
                    "call {i}: {text:?} not in the query {query:?}"
                );
            }
            let bytes = request.into_body().collect_bytes().await.unwrap();
            (call.check)(&serde_json::from_slice(&bytes).unwrap_or(Value::Null));
            let answer = serde_json::to_vec(&call.answer).unwrap();
            reply.send_response(
                Response::builder()
                    .status(call.status)
                    .body(Body::from(answer))
                    .unwrap(),
            );
        }
    });
    (Context::new(client, defaults), server)
}

/// Waits for the fake server to have seen every call of its scenario.
pub async fn verify(server: tokio::task::JoinHandle<()>) {
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("scenario did not finish")
        .expect("scenario failed");
}
