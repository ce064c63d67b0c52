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
    /// The HTTP status the API answered with, if the failure is the API's
    /// refusal (through the finalizer's wrapping too).
    pub fn api_code(&self) -> Option<u16> {
        use kube::runtime::finalizer::Error as F;
        let kube = match self {
            Error::Kube(e) => e,
            Error::Finalizer(inner) => match inner.as_ref() {
                F::ApplyFailed(Error::Kube(e)) | F::CleanupFailed(Error::Kube(e)) => e,
                F::AddFinalizer(e) | F::RemoveFinalizer(e) => e,
                _ => return None,
            },
            _ => return None,
        };
        match kube {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }

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
