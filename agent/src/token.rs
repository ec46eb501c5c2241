//! The workspace bearer token in `<config dir>/.auth_token`.
//!
//! The host may rewrite the file at any time (token rotation), so it is read before every
//! request that needs it rather than cached.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret as _, SecretString};

/// The token file's name inside the config dir.
pub const TOKEN_FILE: &str = ".auth_token";

/// Reads and writes the token file. A token that could not be written (read-only config dir)
/// is kept in memory so the agent can still heartbeat.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    fallback: Arc<Mutex<Option<SecretString>>>,
}

impl TokenStore {
    pub fn new(config_dir: &Path) -> Self {
        Self {
            path: config_dir.join(TOKEN_FILE),
            fallback: Arc::default(),
        }
    }

    /// The current token: the file's trimmed content if non-empty, else the in-memory one.
    pub async fn read(&self) -> Option<SecretString> {
        match tokio::fs::read_to_string(&self.path).await {
            Ok(text) if !text.trim().is_empty() => Some(SecretString::from(text.trim().to_owned())),
            Ok(_) => self.remembered(),
            Err(e) => {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot read the token file");
                }
                self.remembered()
            }
        }
    }

    /// Saves a token with mode 0600, atomically: a temp file in the same dir, then a rename.
    pub async fn write(&self, token: SecretString) -> std::io::Result<()> {
        *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomically(&path, token.expose_secret().as_bytes())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    fn remembered(&self) -> Option<SecretString> {
        self.fallback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        "{TOKEN_FILE}.tmp-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[tokio::test]
    async fn a_written_token_is_private_and_read_back_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        assert!(store.read().await.is_none());

        store.write(SecretString::from("tok-1")).await.unwrap();

        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(TOKEN_FILE), "tok-2\n").unwrap();
        assert_eq!(store.read().await.unwrap().expose_secret(), "tok-2");
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp file is left behind");
    }

    #[tokio::test]
    async fn a_token_that_cannot_be_written_is_still_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(&dir.path().join("missing-dir"));
        assert!(store.write(SecretString::from("tok")).await.is_err());
        assert_eq!(store.read().await.unwrap().expose_secret(), "tok");
    }
}
