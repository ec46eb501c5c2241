//! Authentication: workspace, org and admin tokens, and the checks routes are guarded by.
//!
//! Tokens are 32 random bytes in base64url (43 characters). Only their SHA-256 and an
//! 8-character prefix are stored. The checks follow the original platform's rules (fail-open on a
//! fresh install and in development, locked once any token exists) with two deliberate changes:
//! a workspace token never grants admin rights, and a database error fails closed (503) instead
//! of letting the request through.

use axum::http::HeaderMap;
use base64::Engine as _;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::config::Config;
use crate::store::{self, Db, StoreError};

/// Live tokens one workspace may hold at once.
pub const MAX_LIVE_WORKSPACE_TOKENS: i64 = 50;

/// Why a request was not let through.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("admin auth required")]
    AdminRequired,
    #[error("invalid admin auth token")]
    InvalidAdmin,
    #[error("missing workspace auth token")]
    MissingWorkspace,
    #[error("invalid workspace auth token")]
    InvalidWorkspace,
    #[error("auth required")]
    Required,
    #[error("token store unavailable")]
    Unavailable(#[source] StoreError),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Unavailable(err)
    }
}

/// A freshly minted token: the plaintext goes to its holder once, the rest is stored.
pub struct MintedToken {
    pub plaintext: SecretString,
    pub hash: [u8; 32],
    pub prefix: String,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

pub fn mint() -> MintedToken {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let plaintext = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let prefix = plaintext[..8].to_owned();
    MintedToken {
        hash: hash(&plaintext),
        prefix,
        plaintext: plaintext.into(),
    }
}

pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The bearer token of a request. The prefix must be exactly `Bearer ` (case-sensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Issues a new token for `workspace_id`; refuses when it already holds the maximum.
pub async fn issue_workspace_token(
    db: &Db,
    workspace_id: Uuid,
) -> Result<Option<MintedToken>, StoreError> {
    if store::tokens::count_live_workspace_tokens(db, workspace_id).await?
        >= MAX_LIVE_WORKSPACE_TOKENS
    {
        return Ok(None);
    }
    let token = mint();
    store::tokens::insert_workspace_token(
        db,
        Uuid::new_v4(),
        workspace_id,
        &token.hash,
        &token.prefix,
    )
    .await?;
    Ok(Some(token))
}

pub async fn issue_org_token(
    db: &Db,
    name: Option<&str>,
    created_by: Option<&str>,
) -> Result<(Uuid, MintedToken), StoreError> {
    let token = mint();
    let id = Uuid::new_v4();
    store::tokens::insert_org_token(db, id, &token.hash, &token.prefix, name, created_by).await?;
    Ok((id, token))
}

/// The guards, bound to one host's configuration and database.
#[derive(Debug, Clone)]
pub struct Guard {
    db: Db,
    admin_token: Option<SecretString>,
    dev_fail_open: bool,
    cors_origins: Vec<String>,
}

impl Guard {
    pub fn new(config: &Config, db: Db) -> Self {
        Guard {
            db,
            admin_token: config
                .admin_token()
                .map(|t| SecretString::from(t.to_owned())),
            dev_fail_open: config.dev_fail_open(),
            cors_origins: config.cors_origins.clone(),
        }
    }

    fn is_admin_token(&self, token: &str) -> bool {
        self.admin_token.as_ref().is_some_and(|admin| {
            bool::from(admin.expose_secret().as_bytes().ct_eq(token.as_bytes()))
        })
    }

    /// Fresh install: no admin token configured and no live token of any kind exists yet.
    async fn fresh_install(&self) -> Result<bool, AuthError> {
        Ok(self.admin_token.is_none() && !store::tokens::any_live_token(&self.db).await?)
    }

    /// AdminAuth: the admin token or a live org token.
    pub async fn admin(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        self.admin_with(bearer(headers)).await
    }

    /// AdminAuth for a token that did not come in a header (the WebSocket `token` parameter).
    pub async fn admin_with(&self, token: Option<&str>) -> Result<(), AuthError> {
        if self.dev_fail_open {
            return Ok(());
        }
        if let Some(token) = token
            && (self.is_admin_token(token)
                || store::tokens::org_token_valid(&self.db, &hash(token)).await?)
        {
            return Ok(());
        }
        if self.fresh_install().await? {
            return Ok(());
        }
        Err(if token.is_some() {
            AuthError::InvalidAdmin
        } else {
            AuthError::AdminRequired
        })
    }

    /// WorkspaceAuth bound to `workspace_id`: admin token, org token or that workspace's token.
    pub async fn workspace(
        &self,
        headers: &HeaderMap,
        workspace_id: Uuid,
    ) -> Result<(), AuthError> {
        if self.dev_fail_open {
            return Ok(());
        }
        match bearer(headers) {
            Some(token) => {
                if self.is_admin_token(token)
                    || store::tokens::org_token_valid(&self.db, &hash(token)).await?
                    || store::tokens::workspace_for_token(&self.db, &hash(token)).await?
                        == Some(workspace_id)
                {
                    Ok(())
                } else {
                    Err(AuthError::InvalidWorkspace)
                }
            }
            None if self.fresh_install().await? => Ok(()),
            None => Err(AuthError::MissingWorkspace),
        }
    }

    /// CanvasOrBearer: any valid token, or a browser origin from `CORS_ORIGINS`.
    pub async fn canvas_or_bearer(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        if self.dev_fail_open || self.fresh_install().await? {
            return Ok(());
        }
        if let Some(token) = bearer(headers) {
            let hashed = hash(token);
            if self.is_admin_token(token)
                || store::tokens::org_token_valid(&self.db, &hashed).await?
                || store::tokens::workspace_for_token(&self.db, &hashed)
                    .await?
                    .is_some()
            {
                return Ok(());
            }
            return Err(AuthError::InvalidWorkspace);
        }
        let origin = headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok());
        if origin.is_some_and(|o| self.cors_origins.iter().any(|allowed| allowed == o)) {
            return Ok(());
        }
        Err(AuthError::Required)
    }

    /// The "self" check of agent-facing routes: a workspace that holds live tokens must present
    /// one of its own (or the admin token); one that holds none is let through, so an agent can
    /// register before it has a token.
    pub async fn workspace_self(
        &self,
        token: Option<&str>,
        workspace_id: Uuid,
    ) -> Result<(), AuthError> {
        if self.dev_fail_open {
            return Ok(());
        }
        if store::tokens::count_live_workspace_tokens(&self.db, workspace_id).await? == 0 {
            return Ok(());
        }
        match token {
            None => Err(AuthError::MissingWorkspace),
            Some(token) if self.is_admin_token(token) => Ok(()),
            Some(token) => {
                match store::tokens::workspace_for_token(&self.db, &hash(token)).await? {
                    Some(owner) if owner == workspace_id => Ok(()),
                    _ => Err(AuthError::InvalidWorkspace),
                }
            }
        }
    }

    /// The workspace whose live token the request carries, if it carries one.
    pub async fn token_workspace(&self, headers: &HeaderMap) -> Result<Option<Uuid>, AuthError> {
        match bearer(headers) {
            Some(token) if !self.is_admin_token(token) => {
                Ok(store::tokens::workspace_for_token(&self.db, &hash(token)).await?)
            }
            _ => Ok(None),
        }
    }

    /// Whether an admin token is configured (the test-token route then demands it).
    pub fn admin_token_required(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        match (&self.admin_token, bearer(headers)) {
            (None, _) => Ok(()),
            (Some(_), Some(token)) if self.is_admin_token(token) => Ok(()),
            (Some(_), Some(_)) => Err(AuthError::InvalidAdmin),
            (Some(_), None) => Err(AuthError::AdminRequired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn minted_tokens_are_43_url_safe_characters_with_a_matching_prefix_and_hash() {
        let token = mint();
        let plain = token.plaintext.expose_secret();
        assert_eq!(plain.len(), 43);
        assert!(
            plain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(token.prefix, &plain[..8]);
        assert_eq!(token.hash, hash(plain));
        assert_ne!(mint().hash, token.hash);
        assert!(!format!("{token:?}").contains(plain));
    }

    #[test]
    fn bearer_prefix_is_case_sensitive() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
