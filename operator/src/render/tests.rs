//! Render functions over a matrix of specs.

use k8s_openapi::api::core::v1::ResourceRequirements;
use shadowcat_crds::{IntrospectionConfig, McpProxy, SidecarConfig, StoreKind, TokenExchangeConfig};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::*;
use crate::fixtures::Proxy;

fn env<'a>(container: &'a Container, name: &str) -> Option<&'a EnvVar> {
    container.env.as_ref()?.iter().find(|e| e.name == name)
}

fn port_names(container: &Container) -> Vec<String> {
    container
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.name.clone().unwrap())
        .collect()
}

#[test]
fn memory_store_sidecar_has_no_peer_port_nor_redis() {
    let proxy = Proxy::named("weather").0;
    let config = sidecar_config(&proxy, &Defaults::default());
    assert_eq!(config.upstream.as_deref(), Some("http://127.0.0.1:3000/mcp"));
    assert_eq!(config.listen.as_deref(), Some("0.0.0.0:8080"));
    assert_eq!(config.peer_secret_file, None);
    assert_eq!(config.store, None, "memory is the default");
    let container = sidecar_container(&proxy, &Defaults::default());
    assert_eq!(port_names(&container), ["shadowcat", "shadowcat-admin"]);
    assert_eq!(config.admin_listen.as_deref(), Some("0.0.0.0:15201"));
    assert_eq!(
        container.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert!(
        container.startup_probe.is_some(),
        "the server starts once the sidecar has"
    );
    assert!(env(&container, "SHADOWCAT_STORE").is_none());
    assert_eq!(sidecar_volumes(&proxy).len(), 1);
    assert_eq!(container.image.as_deref(), Some("shadowcat:latest"));
}

#[test]
fn redis_store_takes_the_url_from_the_secret_and_opens_the_peer_port() {
    let proxy = Proxy::named("weather").redis().0;
    let config = sidecar_config(&proxy, &Defaults::default());
    assert_eq!(config.store_prefix.as_deref(), Some("team-a"));
    assert_eq!(config.session_idle_timeout.as_deref(), Some("45m"));
    assert_eq!(
        config.peer_secret_file.as_deref(),
        Some("/etc/shadowcat-peer/secret")
    );
    let container = sidecar_container(&proxy, &Defaults::default());
    let store = env(&container, "SHADOWCAT_STORE").unwrap();
    let secret = store
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((secret.name.as_str(), secret.key.as_str()), ("redis", "url"));
    assert_eq!(
        store.value, None,
        "the URL never lands in the pod spec or the ConfigMap"
    );
    assert_eq!(
        port_names(&container),
        ["shadowcat", "shadowcat-admin", "shadowcat-peer"]
    );
    assert_eq!(config.peer_listen.as_deref(), Some("0.0.0.0:15202"));
    let volumes = sidecar_volumes(&proxy);
    assert_eq!(
        volumes[1].secret.as_ref().unwrap().secret_name.as_deref(),
        Some("weather-shadowcat-peer")
    );
    for name in ["POD_NAME", "POD_IP"] {
        assert!(
            env(&container, name)
                .unwrap()
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .is_some(),
            "{name}"
        );
    }
}

#[test]
fn auth_renders_into_the_sidecar_config_with_secrets_as_file_paths() {
    let proxy = Proxy::named("weather").auth().0;
    let config = sidecar_config(&proxy, &Defaults::default());
    let auth = config.auth.clone().unwrap();
    assert_eq!(
        auth.issuer.as_deref(),
        Some("https://auth.example.com/realms/mcp")
    );
    assert_eq!(auth.resource.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(auth.audiences, Some(vec!["mcp-gateway".to_owned()]));
    assert_eq!(auth.leeway.as_deref(), Some("1m"));
    assert_eq!(auth.ca_file.as_deref(), Some("/etc/shadowcat-auth-ca/ca.crt"));
    let scopes = auth.scopes.unwrap();
    assert_eq!(scopes.default, Some(vec!["mcp".to_owned()]));
    assert_eq!(scopes.tools.unwrap()["delete_repo"], ["mcp:admin".to_owned()]);
    assert_eq!(auth.claim_headers.unwrap()["sub"], "X-Mcp-Subject");
    let upstream = config.upstream_auth.clone().unwrap();
    assert_eq!(upstream.header.as_deref(), Some("X-Api-Key"));
    assert_eq!(
        upstream.value_file.as_deref(),
        Some("/etc/shadowcat-upstream-credential/value")
    );
    let (yaml, _) = config_yaml(&config).unwrap();
    let text = config_map(&proxy, &yaml).data.unwrap()[CONFIG_KEY].clone();
    for secret in ["corp-ca", "root-bundle.pem", "mcp-credential", "api-key"] {
        assert!(!text.contains(secret), "{secret} in the ConfigMap:\n{text}");
    }
}

#[test]
fn auth_secrets_are_mounted_one_key_each_never_in_the_environment() {
    let proxy = Proxy::named("weather").auth().0;
    let volumes = sidecar_volumes(&proxy);
    let secret_volume = |name: &str| {
        let volume = volumes.iter().find(|v| v.name == name).unwrap();
        volume.secret.clone().unwrap()
    };
    for (volume, secret, key, file) in [
        ("shadowcat-auth-ca", "corp-ca", "root-bundle.pem", "ca.crt"),
        (
            "shadowcat-upstream-credential",
            "mcp-credential",
            "api-key",
            "value",
        ),
    ] {
        let source = secret_volume(volume);
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        let items = source.items.unwrap();
        assert_eq!(
            items
                .iter()
                .map(|i| (i.key.as_str(), i.path.as_str()))
                .collect::<Vec<_>>(),
            [(key, file)],
            "only the referenced key"
        );
        assert_eq!(
            source.default_mode, None,
            "readable by the sidecar's uid, like the peer secret"
        );
    }
    let container = sidecar_container(&proxy, &Defaults::default());
    let mounts: Vec<_> = container
        .volume_mounts
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path, m.read_only, m.sub_path))
        .collect();
    let mount = |name: &str, dir: &str| (name.to_owned(), dir.to_owned(), Some(true), None);
    assert_eq!(
        mounts,
        [
            mount("shadowcat-config", "/etc/shadowcat"),
            mount("shadowcat-auth-ca", "/etc/shadowcat-auth-ca"),
            mount(
                "shadowcat-upstream-credential",
                "/etc/shadowcat-upstream-credential"
            ),
        ]
    );
    assert!(
        container
            .env
            .unwrap()
            .iter()
            .all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())),
        "no Secret in the environment without Redis"
    );
}

#[test]
fn auth_without_a_ca_or_a_credential_mounts_no_secret() {
    let mut proxy = Proxy::named("weather").auth().0;
    if let Some(auth) = &mut proxy.spec.auth {
        auth.ca_secret_ref = None;
        auth.upstream_credential = None;
    }
    let config = sidecar_config(&proxy, &Defaults::default());
    assert_eq!(config.auth.unwrap().ca_file, None);
    assert_eq!(config.upstream_auth, None);
    assert_eq!(sidecar_volumes(&proxy).len(), 1);
    assert!(secret_refs(&proxy).is_empty());
}

#[test]
fn introspection_and_token_exchange_render_with_client_secrets_as_file_paths() {
    let proxy = Proxy::named("weather").auth().introspection().token_exchange().0;
    let config = sidecar_config(&proxy, &Defaults::default());
    let introspection = config.auth.clone().unwrap().introspection.unwrap();
    assert_eq!(
        introspection,
        IntrospectionConfig {
            endpoint: Some("https://auth.example.com/realms/mcp/introspect".into()),
            client_id: Some("shadowcat".into()),
            client_secret_file: Some("/etc/shadowcat-introspection/client-secret".into()),
        }
    );
    let upstream = config.upstream_auth.clone().unwrap();
    assert_eq!(upstream.header.as_deref(), Some("Authorization"));
    assert_eq!(
        upstream.value_file, None,
        "no static credential beside the exchange"
    );
    assert_eq!(
        upstream.token_exchange,
        Some(TokenExchangeConfig {
            audience: Some("https://tools.internal/mcp".into()),
            client_id: Some("shadowcat".into()),
            client_secret_file: Some("/etc/shadowcat-token-exchange/client-secret".into()),
            scope: Some("tools:read".into()),
            token_endpoint: None,
        })
    );
    let (yaml, _) = config_yaml(&config).unwrap();
    let text = config_map(&proxy, &yaml).data.unwrap()[CONFIG_KEY].clone();
    for secret in [
        "introspection-client",
        "idp-secret",
        "exchange-client",
        "exchange-secret",
    ] {
        assert!(!text.contains(secret), "{secret} in the ConfigMap:\n{text}");
    }
}

#[test]
fn client_secrets_are_mounted_one_key_each_in_volumes_of_their_own() {
    let proxy = Proxy::named("weather").auth().introspection().token_exchange().0;
    let volumes = sidecar_volumes(&proxy);
    for (volume, secret, key) in [
        ("shadowcat-introspection", "introspection-client", "idp-secret"),
        ("shadowcat-token-exchange", "exchange-client", "exchange-secret"),
    ] {
        let source = volumes
            .iter()
            .find(|v| v.name == volume)
            .unwrap()
            .secret
            .clone()
            .unwrap();
        assert_eq!(source.secret_name.as_deref(), Some(secret));
        let items: Vec<_> = source
            .items
            .unwrap()
            .into_iter()
            .map(|i| (i.key, i.path))
            .collect();
        assert_eq!(
            items,
            [(key.to_owned(), "client-secret".to_owned())],
            "only the referenced key"
        );
        assert_eq!(source.default_mode, None);
    }
    let container = sidecar_container(&proxy, &Defaults::default());
    let mounts: Vec<_> = container
        .volume_mounts
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path, m.read_only, m.sub_path))
        .collect();
    let mount = |name: &str, dir: &str| (name.to_owned(), dir.to_owned(), Some(true), None);
    assert_eq!(
        mounts,
        [
            mount("shadowcat-config", "/etc/shadowcat"),
            mount("shadowcat-auth-ca", "/etc/shadowcat-auth-ca"),
            mount("shadowcat-introspection", "/etc/shadowcat-introspection"),
            mount("shadowcat-token-exchange", "/etc/shadowcat-token-exchange"),
        ],
        "no upstream credential volume with a token exchange"
    );
    assert!(
        container
            .env
            .unwrap()
            .iter()
            .all(|e| e.value_from.as_ref().is_none_or(|v| v.secret_key_ref.is_none())),
        "no Secret in the environment"
    );
}

/// An upstream credential naming both sources, or neither, is refused by
/// the spec's own rule, and by the sidecar's too: the render keeps what the
/// spec says, so neither source is dropped in silence.
#[test]
fn upstream_credential_with_both_or_neither_source_is_refused() {
    let both = Proxy::named("w").auth().both_credential_sources().0;
    let neither = Proxy::named("w").auth().no_credential_source().0;
    for (proxy, spec_reason, sidecar_key) in [
        (&both, "not both", "upstreamAuth.tokenExchange"),
        (
            &neither,
            "needs secretRef or tokenExchange",
            "upstreamAuth.valueFile",
        ),
    ] {
        let credential = proxy
            .spec
            .auth
            .as_ref()
            .unwrap()
            .upstream_credential
            .as_ref()
            .unwrap();
        let error = credential.validate().unwrap_err();
        assert_eq!(error.key, "spec.auth.upstreamCredential");
        assert!(error.reason.contains(spec_reason), "{error}");
        let error = sidecar_config(proxy, &Defaults::default())
            .validate()
            .unwrap_err();
        assert_eq!(error.key, sidecar_key);
    }
    assert_eq!(
        secret_refs(&both).len(),
        3,
        "both sources' Secrets checked: CA, credential, exchange client"
    );
}

#[test]
fn every_secret_key_the_spec_names_is_checked() {
    let names = |p: &McpProxy| -> Vec<(String, String)> {
        secret_refs(p)
            .into_iter()
            .map(|r| (r.name.clone(), r.key.clone()))
            .collect()
    };
    let pair = |n: &str, k: &str| (n.to_owned(), k.to_owned());
    assert!(names(&Proxy::named("w").0).is_empty());
    assert_eq!(
        names(&Proxy::named("w").redis().auth().0),
        [
            pair("redis", "url"),
            pair("corp-ca", "root-bundle.pem"),
            pair("mcp-credential", "api-key")
        ]
    );
    assert_eq!(
        names(&Proxy::named("w").auth().introspection().token_exchange().0),
        [
            pair("corp-ca", "root-bundle.pem"),
            pair("introspection-client", "idp-secret"),
            pair("exchange-client", "exchange-secret")
        ]
    );
}

/// `resource` is checked by the sidecar's own rules (`canonical_uri`), which
/// the operator runs before applying anything; the message names the key.
#[test]
fn auth_resource_that_is_no_absolute_http_url_is_refused() {
    for resource in [
        "mcp.example.com/mcp",
        "/mcp",
        "ftp://mcp.example.com/mcp",
        "https://mcp.example.com/mcp#frag",
        "https://user@mcp.example.com/mcp",
        "",
    ] {
        let proxy = Proxy::named("w").auth().resource(resource).0;
        let error = sidecar_config(&proxy, &Defaults::default())
            .validate()
            .unwrap_err();
        assert_eq!(error.key, "auth.resource", "{resource:?}");
    }
}

#[test]
fn sidecar_runs_restricted() {
    let container = sidecar_container(&Proxy::named("w").0, &Defaults::default());
    let sc = container.security_context.unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.run_as_user, Some(65532));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    let readiness = container.readiness_probe.unwrap().http_get.unwrap();
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
}

#[test]
fn overrides_win_over_operator_defaults() {
    let proxy = Proxy::named("w").overrides().0;
    let container = sidecar_container(&proxy, &Defaults::default());
    assert_eq!(
        container.image.as_deref(),
        Some("registry.example/shadowcat:1.2.3")
    );
    assert_eq!(
        env(&container, "SHADOWCAT_LOG").unwrap().value.as_deref(),
        Some("debug")
    );
    assert_eq!(container.resources, Some(ResourceRequirements::default()));
}

#[test]
fn rollout_patch_is_the_hash_annotation_alone_and_empty_to_release() {
    for (fixture, kind) in [
        (Proxy::named("w"), "Deployment"),
        (Proxy::named("w").stateful(), "StatefulSet"),
    ] {
        let target = &fixture.0.spec.target_ref;
        let patch = rollout_patch(target, Some("abc123"));
        assert_eq!(
            patch,
            json!({
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": "mcp-server"},
                "spec": {"template": {"metadata": {"annotations": {CONFIG_HASH: "abc123"}}}}
            })
        );
        assert_eq!(
            rollout_patch(target, None),
            json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "mcp-server"}})
        );
    }
    assert_eq!(rollout_manager(&Proxy::named("w").0), "shadowcat.dev/w");
}

#[test]
fn ports_are_configurable_and_clashes_are_named() {
    let mut proxy = Proxy::named("w").redis().0;
    proxy.spec.sidecar.admin_port = Some(9901);
    proxy.spec.sidecar.peer_port = Some(9902);
    let config = sidecar_config(&proxy, &Defaults::default());
    assert_eq!(config.admin_listen.as_deref(), Some("0.0.0.0:9901"));
    assert_eq!(config.peer_listen.as_deref(), Some("0.0.0.0:9902"));
    let container = sidecar_container(&proxy, &Defaults::default());
    let ports: Vec<i32> = container
        .ports
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [8080, 9901, 9902]);
    assert_eq!(proxy.spec.port_clash(), None);
    proxy.spec.sidecar.admin_port = Some(3000);
    assert_eq!(
        proxy.spec.port_clash().as_deref(),
        Some("sidecar.adminPort and upstream.port are both 3000: they must differ")
    );
    proxy.spec.sidecar.admin_port = None;
    proxy.spec.upstream.port = 8080;
    assert_eq!(
        proxy.spec.port_clash().as_deref(),
        Some("upstream.port and listen.port are both 8080: they must differ")
    );
}

#[test]
fn network_policy_opens_each_port_to_whom_it_names() {
    use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
    use shadowcat_crds::NetworkPolicySpec;

    assert!(network_policy(&Proxy::named("w").0).is_none());
    let monitoring = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("name".to_owned(), "monitoring".to_owned())])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut proxy = Proxy::named("w").redis().0;
    proxy.spec.network_policy = Some(NetworkPolicySpec {
        mcp_from: Vec::new(),
        admin_from: vec![monitoring.clone()],
    });
    let policy = network_policy(&proxy).unwrap();
    assert_eq!(policy.metadata.owner_references.unwrap()[0].kind, "McpProxy");
    let spec = policy.spec.unwrap();
    let ours = BTreeMap::from([(PROXY_LABEL.to_owned(), "w".to_owned())]);
    assert_eq!(
        spec.pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&ours)
    );
    let rules = spec.ingress.unwrap();
    let port = |i: usize| rules[i].ports.as_ref().unwrap()[0].port.clone();
    assert_eq!(
        (port(0), rules[0].from.clone()),
        (Some(IntOrString::Int(8080)), None),
        "MCP from anywhere"
    );
    assert_eq!(
        (port(1), rules[1].from.clone()),
        (Some(IntOrString::Int(15201)), Some(vec![monitoring]))
    );
    let siblings = rules[2].from.as_ref().unwrap()[0].pod_selector.as_ref().unwrap();
    assert_eq!(
        (port(2), siblings.match_labels.as_ref()),
        (Some(IntOrString::Int(15202)), Some(&ours))
    );
    assert_eq!(
        rules.len(),
        3,
        "nothing else reaches the pod, the server's own port included"
    );
}

#[test]
fn config_hash_follows_the_config() {
    let defaults = Defaults::default();
    let hash = |p: &McpProxy| config_yaml(&sidecar_config(p, &defaults)).unwrap().1;
    let a = Proxy::named("w").0;
    assert_eq!(hash(&a), hash(&Proxy::named("w").0), "stable");
    assert_ne!(
        hash(&a),
        hash(&Proxy::named("w").redis().0),
        "changes with the spec"
    );
    assert_eq!(hash(&a).len(), 16);
}

#[test]
fn policy_renders_as_written_and_stays_out_of_the_hash() {
    let defaults = Defaults::default();
    let render = |p: &McpProxy| config_yaml(&sidecar_config(p, &defaults)).unwrap();
    let proxy = Proxy::named("w").policy().0;
    let config = sidecar_config(&proxy, &defaults);
    assert_eq!(config.policy, proxy.spec.policy);
    let (yaml, hash) = render(&proxy);
    let text = config_map(&proxy, &yaml).data.unwrap()[CONFIG_KEY].clone();
    assert_eq!(SidecarConfig::from_yaml(&text).unwrap().policy, proxy.spec.policy);
    // The sidecar reloads `policy` from the mounted file: adding, changing or
    // removing one leaves the hash (and so the pods) alone.
    let (none_yaml, none_hash) = render(&Proxy::named("w").0);
    let (other_yaml, other_hash) = render(&Proxy::named("w").policy().policy_tool("delete_repo").0);
    assert_eq!((&hash, &other_hash), (&none_hash, &none_hash));
    assert!(yaml != none_yaml && yaml != other_yaml);
    assert_ne!(
        render(&Proxy::named("w").policy().retention("20m").0).1,
        hash,
        "everything else still rolls the pods"
    );
}

#[test]
fn service_only_when_asked_and_points_at_the_sidecar() {
    assert!(service(&Proxy::named("w").0).is_none());
    let selector = BTreeMap::from([(PROXY_LABEL.to_owned(), "w".to_owned())]);
    let svc = service(&Proxy::named("w").service().0).unwrap();
    assert_eq!(svc.metadata.name.as_deref(), Some("w"));
    assert_eq!(svc.metadata.owner_references.unwrap()[0].kind, "McpProxy");
    let spec = svc.spec.unwrap();
    assert_eq!(spec.selector, Some(selector));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.port, 8000);
    assert_eq!(port.target_port, Some(IntOrString::String("shadowcat".into())));
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
}

/// What the operator renders, the sidecar's own loader accepts: the file,
/// with the environment the pod gives it layered on top.
#[test]
fn rendered_config_is_accepted_by_the_sidecar_loader() {
    for fixture in [
        Proxy::named("w"),
        Proxy::named("w").redis(),
        Proxy::named("w").service().overrides(),
        Proxy::named("w").retention("20m").response_retention("30s"),
        Proxy::named("w").auth(),
        Proxy::named("w")
            .redis()
            .auth()
            .resource("http://w.tools.svc/mcp"),
        Proxy::named("w").auth().introspection(),
        Proxy::named("w").redis().auth().introspection().token_exchange(),
        Proxy::named("w").redis().auth().policy(),
    ] {
        let proxy = fixture.0;
        let (yaml, _) = config_yaml(&sidecar_config(&proxy, &Defaults::default())).unwrap();
        let file = SidecarConfig::from_yaml(&yaml).unwrap();
        let env = SidecarConfig {
            store: (proxy.spec.sessions.store == StoreKind::Redis).then(|| "redis://redis:6379".into()),
            ..Default::default()
        };
        let settings = env.or(file).validate().unwrap();
        assert_eq!(settings.policy, proxy.spec.policy);
        assert_eq!(settings.listen.port(), proxy.spec.listen.port);
        assert_eq!(settings.upstream.port_u16(), Some(proxy.spec.upstream.port));
        if let Some(auth) = &proxy.spec.auth {
            let verified = settings.auth.unwrap();
            assert_eq!(verified.resource, auth.resource);
            assert_eq!(verified.ca_file.as_deref(), Some("/etc/shadowcat-auth-ca/ca.crt"));
            assert_eq!(
                verified.scopes_supported,
                ["mcp", "mcp:admin"],
                "every scope named"
            );
            assert_eq!(
                verified.introspection.map(|i| i.client_secret_file),
                auth.introspection
                    .as_ref()
                    .map(|_| "/etc/shadowcat-introspection/client-secret".to_owned())
            );
            let credential = auth.upstream_credential.as_ref().unwrap();
            match (settings.upstream_auth, settings.token_exchange) {
                (Some(upstream), None) => assert_eq!(
                    (upstream.header.as_str(), upstream.value_file.as_str()),
                    ("x-api-key", "/etc/shadowcat-upstream-credential/value")
                ),
                (None, Some(exchange)) => {
                    assert!(credential.token_exchange.is_some());
                    assert_eq!(
                        (exchange.header.as_str(), exchange.client_secret_file.as_str()),
                        ("authorization", "/etc/shadowcat-token-exchange/client-secret")
                    );
                    assert_eq!(exchange.audience, "https://tools.internal/mcp");
                }
                other => panic!("one upstream credential, not {other:?}"),
            }
        }
        if proxy.spec.replay.response_retention.is_some() {
            let secs = std::time::Duration::from_secs;
            assert_eq!(
                (settings.sse.retention, settings.sse.response_retention),
                (secs(20 * 60), secs(30))
            );
        }
        let cm = config_map(&proxy, &yaml);
        assert_eq!(cm.data.unwrap()[CONFIG_KEY], yaml);
    }
}

/// The McpProxies of `examples/` render into configs the sidecar accepts
/// (the schema check below cannot see the sidecar's own rules).
#[test]
fn examples_render_into_configs_the_sidecar_accepts() {
    use serde::Deserialize;

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = Vec::new();
    for file in [
        "mcpproxy.yaml",
        "mcpproxy-auth.yaml",
        "mcpproxy-token-exchange.yaml",
        "mcpproxy-policy.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if value["kind"] != "McpProxy" {
                continue;
            }
            let proxy: McpProxy = serde_json::from_value(value).unwrap();
            let env = SidecarConfig {
                store: redis(&proxy).map(|_| "redis://redis:6379".into()),
                ..Default::default()
            };
            let config = sidecar_config(&proxy, &Defaults::default());
            let settings = env
                .or(config)
                .validate()
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                settings.policy, proxy.spec.policy,
                "{file}: the policy as written"
            );
            seen.push((
                proxy.name_any(),
                settings.auth.map(|a| a.resource),
                settings.policy.is_some(),
            ));
        }
    }
    let resource = || Some("https://mcp.example.com/mcp".to_owned());
    assert_eq!(
        seen,
        [
            ("everything".to_owned(), None, false),
            ("everything".to_owned(), resource(), false),
            ("everything".to_owned(), resource(), false),
            ("everything".to_owned(), resource(), true)
        ]
    );
}

#[test]
fn an_allow_list_entry_must_end_at_a_boundary_and_allow_the_default_image() {
    let with = |image: &str, allowed: &[&str]| Defaults {
        image: image.into(),
        allowed_images: allowed.iter().map(|a| (*a).to_owned()).collect(),
        ..Defaults::default()
    };
    assert_eq!(with("shadowcat:1", &[]).problem(), None, "no list: any image");
    assert_eq!(
        with(
            "reg.example/shadowcat:1",
            &["reg.example/shadowcat:", "ghcr.io/acme/"]
        )
        .problem(),
        None
    );
    let bare = with("reg.example/shadowcat:1", &["reg.example/shadowcat"])
        .problem()
        .unwrap();
    assert!(bare.contains("must end with"), "{bare}");
    let off = with("other/shadowcat:1", &["reg.example/"]).problem().unwrap();
    assert!(off.contains("the default sidecar image"), "{off}");
    // The boundary is what keeps a look-alike repository out.
    let proxy = |image: &str| {
        let mut p = Proxy::named("w").0;
        p.spec.sidecar.image = Some(image.into());
        p
    };
    let strict = with("reg.example/shadowcat:1", &["reg.example/shadowcat:"]);
    assert_eq!(strict.image_refusal(&proxy("reg.example/shadowcat:2")), None);
    assert!(
        strict
            .image_refusal(&proxy("reg.example/shadowcat-evil:1"))
            .is_some()
    );
}
