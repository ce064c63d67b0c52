//! The operator's one error type.

/// A reconcile failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a call.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Rendering the sidecar config failed.
    #[error("cannot render the sidecar config: {0}")]
    Render(#[from] serde_yaml::Error),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The object has no namespace (McpProxy is namespaced; should not happen).
    #[error("McpProxy without a namespace")]
    NoNamespace,
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Render(_) => "render",
            Error::Finalizer(_) => "finalizer",
            Error::NoNamespace => "no_namespace",
        }
    }
}

/// Result of the operator.
pub type Result<T, E = Error> = std::result::Result<T, E>;
