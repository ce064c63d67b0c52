//! The credential Shadowcat presents to the upstream on every request, in
//! place of the client's: a header whose value lives in a file (a mounted
//! Secret). Kubernetes updates such files in place, so the file is looked at
//! again (at most once a second) and a new value is used from then on.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderName, HeaderValue};
use shadowcat_crds::UpstreamAuthSettings;

/// How often the file is checked for a new value.
const RECHECK: Duration = Duration::from_secs(1);

struct Current {
    value: HeaderValue,
    modified: Option<SystemTime>,
    checked: Instant,
}

/// A header and its value, kept in step with the file.
pub struct Credential {
    name: HeaderName,
    path: String,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.name)
            .field("file", &self.path)
            .finish_non_exhaustive()
    }
}

fn read(path: &str) -> Result<(HeaderValue, Option<SystemTime>), String> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut value = HeaderValue::from_str(text.trim_end())
        .map_err(|_| format!("{path} does not hold a valid header value"))?;
    value.set_sensitive(true);
    Ok((value, modified))
}

impl Credential {
    /// Reads the file once; an unreadable file is an error at startup.
    pub fn load(settings: &UpstreamAuthSettings) -> anyhow::Result<Self> {
        let name = HeaderName::from_bytes(settings.header.as_bytes())
            .map_err(|e| anyhow::anyhow!("invalid config `upstreamAuth.header`: {e}"))?;
        let (value, modified) = read(&settings.value_file)
            .map_err(|e| anyhow::anyhow!("invalid config `upstreamAuth.valueFile`: {e}"))?;
        Ok(Self {
            name,
            path: settings.value_file.clone(),
            current: Mutex::new(Current {
                value,
                modified,
                checked: Instant::now(),
            }),
        })
    }

    /// The header and its value now. A file that cannot be read any more
    /// leaves the last value in use (and a warning in the log).
    pub fn header(&self) -> (HeaderName, HeaderValue) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let modified = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
            if modified != current.modified {
                match read(&self.path) {
                    Ok((value, modified)) => {
                        tracing::info!(file = %self.path, "upstream credential changed");
                        current.value = value;
                        current.modified = modified;
                    }
                    Err(e) => tracing::warn!(error = %e, "keeping the previous upstream credential"),
                }
            }
        }
        (self.name.clone(), current.value.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_file() {
        let dir = std::env::temp_dir().join(format!("shadowcat-cred-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "Bearer one\n").unwrap();
        let settings = UpstreamAuthSettings {
            header: "authorization".into(),
            value_file: path.to_string_lossy().into_owned(),
        };
        let credential = Credential::load(&settings).unwrap();
        assert_eq!(credential.header().1, "Bearer one");
        std::fs::write(&path, "Bearer two").unwrap();
        // Force the next look at the file (and a different mtime).
        {
            let mut c = credential.current.lock().unwrap();
            c.checked -= RECHECK;
            c.modified = None;
        }
        assert_eq!(credential.header().1, "Bearer two");
        std::fs::remove_file(&path).unwrap();
        {
            let mut c = credential.current.lock().unwrap();
            c.checked -= RECHECK;
        }
        assert_eq!(
            credential.header().1,
            "Bearer two",
            "a vanished file keeps the last value"
        );
        let missing = UpstreamAuthSettings {
            value_file: path.to_string_lossy().into_owned(),
            ..settings
        };
        assert!(Credential::load(&missing).is_err());
    }
}
