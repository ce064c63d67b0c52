//! The operator's defaults for what an McpProxy does not say, and the
//! checks they take part in (the image allow-list, the grace period).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use shadowcat_crds::McpProxy;

/// Operator-wide defaults for what an McpProxy does not say.
#[derive(Clone, Debug, PartialEq)]
pub struct Defaults {
    /// Sidecar image.
    pub image: String,
    /// Sidecar resources.
    pub resources: ResourceRequirements,
    /// Graceful shutdown given to the sidecar, in seconds.
    pub drain_seconds: i64,
    /// Image pull Secrets every injected pod gets (they must exist in the
    /// pod's namespace).
    pub image_pull_secrets: Vec<String>,
    /// Image prefixes a sidecar image must start with; any image when empty.
    pub allowed_images: Vec<String>,
}

impl Defaults {
    /// The sidecar image `proxy` asks for, or the default.
    pub fn image<'a>(&'a self, proxy: &'a McpProxy) -> &'a str {
        proxy.spec.sidecar.image.as_deref().unwrap_or(&self.image)
    }

    /// Why these defaults cannot run the operator, if so: an allow-list
    /// entry that does not end at a boundary (`/`, `:`, `@`; a bare
    /// `registry.example.com/shadowcat` would also allow
    /// `registry.example.com/shadowcat-evil`), or a default image the list
    /// does not allow.
    pub fn problem(&self) -> Option<String> {
        if let Some(bad) = self.allowed_images.iter().find(|p| !p.ends_with(['/', ':', '@'])) {
            return Some(format!(
                "allowed image prefix {bad:?} must end with '/', ':' or '@' (a bare prefix like \
                 registry.example.com/shadowcat would also allow registry.example.com/shadowcat-evil)"
            ));
        }
        let image = &self.image;
        (!self.allowed_images.is_empty()
            && !self.allowed_images.iter().any(|p| image.starts_with(p.as_str())))
        .then(|| format!("the default sidecar image {image:?} starts with none of the allowed prefixes"))
    }

    /// Why `proxy`'s sidecar image may not run, if it may not.
    pub fn image_refusal(&self, proxy: &McpProxy) -> Option<String> {
        let image = self.image(proxy);
        (!self.allowed_images.is_empty()
            && !self.allowed_images.iter().any(|p| image.starts_with(p.as_str())))
        .then(|| {
            format!(
                "sidecar image {image:?} starts with none of the allowed prefixes {:?}",
                self.allowed_images
            )
        })
    }

    /// The pod's termination grace period the sidecar's drain needs: the
    /// delay before it drains, the drain, and a margin for the server's
    /// own exit.
    pub fn grace_seconds(&self) -> i64 {
        self.drain_seconds + 10
    }
}

impl Default for Defaults {
    fn default() -> Self {
        let quantities = |cpu: &str, memory: &str| {
            BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu.into())),
                ("memory".to_owned(), Quantity(memory.into())),
            ])
        };
        Self {
            image: "shadowcat:latest".into(),
            resources: ResourceRequirements {
                requests: Some(quantities("50m", "64Mi")),
                limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("256Mi".into()))])),
                ..Default::default()
            },
            drain_seconds: 25,
            image_pull_secrets: Vec::new(),
            allowed_images: Vec::new(),
        }
    }
}
