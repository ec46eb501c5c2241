//! Authentication: workspace, org and admin tokens, and the checks routes are guarded by.
//!
//! Tokens are 32 random bytes in base64url (43 characters). Only their SHA-256 and an
//! 8-character prefix are stored. A request's credential resolves to a [`Principal`]: the
//! operator (the admin token or a live org token) or one workspace (one of its live tokens).
//! Every check names who may pass; none of them trusts the absence of something:
//!
//! - no workspace is ever open because it holds no token (the original let anyone register,
//!   heartbeat or read secrets for such a workspace and handed out a fresh token to them);
//! - an `Origin` header is never a credential (it only decides what a browser may read), except
//!   in development, for callers on loopback, where the original's canvas is recognised by it;
//! - the fresh-install open mode (no admin token configured and no credential issued yet) is
//!   decided once and stored: the first credential issued ends it for good, whatever is deleted
//!   later.
//!
//! A database error fails closed (503) instead of letting the request through.
//!
//! Live tokens are held in memory by hash ([`live`]), kept current by the event bus on every
//! replica: a revoked token stops working everywhere as soon as the invalidation is relayed.

pub mod live;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use uuid::Uuid;

use crate::config::{Config, Environment};
use crate::store::{self, Db, StoreError};

/// Live tokens minted through the API one workspace may hold at once (besides its agent's own,
/// which the host rotates): a few for tools. A leaked token cannot multiply itself beyond this,
/// and each one expires.
pub const MAX_LIVE_WORKSPACE_TOKENS: i64 = 5;

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
    /// Authenticated, but this credential may not do this (403).
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("token store unavailable")]
    Unavailable(#[source] StoreError),
}

impl From<StoreError> for AuthError {
    fn from(err: StoreError) -> Self {
        AuthError::Unavailable(err)
    }
}

/// Who a credential says the caller is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The operator: the admin token, a live org token, or (while the install is fresh, or in
    /// development on loopback without an admin token) anyone.
    Admin,
    /// The holder of one of this workspace's live tokens: its agent, or a tool it was given to.
    Workspace(Uuid),
}

impl Principal {
    pub fn is_admin(self) -> bool {
        self == Principal::Admin
    }
}

/// What a request brings to be authenticated. Built once at the HTTP edge.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The bearer token (`Authorization: Bearer …`, or the WebSocket `token` parameter).
    pub bearer: Option<SecretString>,
    /// The browser's `Origin`, if any.
    pub origin: Option<String>,
    /// Whether the connection came from a loopback address: development conveniences are only
    /// ever granted to such callers.
    pub local: bool,
}

impl Credentials {
    /// The credentials of a request with these headers, from `peer`.
    pub fn from_request(headers: &HeaderMap, peer: Option<IpAddr>) -> Self {
        Credentials {
            bearer: bearer(headers).map(|t| SecretString::from(t.to_owned())),
            origin: headers
                .get(axum::http::header::ORIGIN)
                .and_then(|o| o.to_str().ok())
                .map(str::to_owned),
            local: peer.is_some_and(|ip| ip.is_loopback()),
        }
    }

    fn token(&self) -> Option<&str> {
        self.bearer.as_ref().map(|t| t.expose_secret())
    }
}

/// A freshly minted token: the plaintext goes to its holder once, the rest is stored.
pub struct MintedToken {
    pub plaintext: SecretString,
    pub hash: [u8; 32],
    pub prefix: String,
    /// When it stops working (`None`: rotated by the host instead).
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("prefix", &self.prefix)
            .field("expires_at", &self.expires_at)
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
        expires_at: None,
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

/// How long a workspace token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// The token the host writes for its agent: replaced at every (re)provision.
    Rotated,
    /// A token minted through the API: it stops working after this long.
    Expires(Duration),
}

/// Issues a new token for `workspace_id`; `None` when an API mint would exceed
/// [`MAX_LIVE_WORKSPACE_TOKENS`]. Issuing any credential ends the fresh-install mode for good.
pub async fn issue_workspace_token(
    db: &Db,
    workspace_id: Uuid,
    lifetime: Lifetime,
) -> Result<Option<MintedToken>, StoreError> {
    if matches!(lifetime, Lifetime::Expires(_))
        && store::tokens::count_live_minted_workspace_tokens(db, workspace_id).await?
            >= MAX_LIVE_WORKSPACE_TOKENS
    {
        return Ok(None);
    }
    store::settings::lock_install(db, "a workspace token was issued").await?;
    let mut token = mint();
    token.expires_at = match lifetime {
        Lifetime::Rotated => None,
        Lifetime::Expires(ttl) => {
            Some(Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX))
        }
    };
    store::tokens::insert_workspace_token(
        db,
        Uuid::new_v4(),
        workspace_id,
        &token.hash,
        &token.prefix,
        token.expires_at,
    )
    .await?;
    Ok(Some(token))
}

/// A new credential for `workspace_id`'s agent, with every other token of the workspace revoked
/// (API-minted ones too: a rotation answers a leak). The new token is stored before the old
/// ones are revoked, so a failure between leaves the old ones working, never none. The caller
/// makes the revocation reach every replica's token cache.
pub async fn rotate_workspace_credential(
    db: &Db,
    workspace_id: Uuid,
) -> Result<(MintedToken, u64), StoreError> {
    let token = issue_workspace_token(db, workspace_id, Lifetime::Rotated)
        .await?
        .expect("a rotated token is never refused for the mint limit");
    let revoked =
        store::tokens::revoke_workspace_tokens_except(db, workspace_id, &token.hash).await?;
    Ok((token, revoked))
}

/// Mints `count` rotated workspace tokens for new workspaces whose rows the caller stores
/// together with them (an org import's batch), locking the install first as
/// [`issue_workspace_token`] does. None when `count` is zero.
pub async fn mint_workspace_tokens(db: &Db, count: usize) -> Result<Vec<MintedToken>, StoreError> {
    if count == 0 {
        return Ok(Vec::new());
    }
    store::settings::lock_install(db, "a workspace token was issued").await?;
    Ok((0..count).map(|_| mint()).collect())
}

pub async fn issue_org_token(
    db: &Db,
    name: Option<&str>,
    created_by: Option<&str>,
) -> Result<(Uuid, MintedToken), StoreError> {
    store::settings::lock_install(db, "an org token was issued").await?;
    let token = mint();
    let id = Uuid::new_v4();
    store::tokens::insert_org_token(db, id, &token.hash, &token.prefix, name, created_by).await?;
    Ok((id, token))
}

/// Locks the install at start when it has left its fresh-install mode before: an admin token is
/// configured, or a credential was ever issued (a database older than the stored flag).
pub async fn settle_install_mode(db: &Db, config: &Config) -> Result<(), StoreError> {
    if config.admin_token().is_some() {
        store::settings::lock_install(db, "an admin token was configured").await?;
    } else if !store::settings::install_locked(db).await?
        && store::tokens::any_token_issued(db).await?
    {
        store::settings::lock_install(db, "credentials were issued before this release").await?;
    }
    Ok(())
}

/// How long the rate limiter remembers which bucket a bearer belongs to.
const LIMITER_KEY_TTL: Duration = Duration::from_secs(30);
/// Bearers the rate limiter remembers at most (a flood of random ones cannot grow it further).
const LIMITER_KEY_CAPACITY: usize = 10_000;

/// Bearers (by hash) the rate limiter resolved recently, with when.
type LimiterKeys = HashMap<[u8; 32], (Option<Principal>, Instant)>;

/// The guards, bound to one host's configuration and database.
#[derive(Debug, Clone)]
pub struct Guard {
    db: Db,
    /// Where a token's last use is stamped, off the request path.
    writes: store::batch::Writer,
    admin_token: Option<SecretString>,
    env: Environment,
    cors_origins: Vec<String>,
    /// Set once the install is seen locked; it never unlocks, so the database is not asked again.
    locked: Arc<AtomicBool>,
    /// Recently resolved bearers (by hash) for the rate limiter's bucket choice only; never used
    /// to let a request through.
    limiter_keys: Arc<Mutex<LimiterKeys>>,
    /// Live tokens by hash, kept current by the event bus (see [`live`]).
    live: Arc<live::LiveTokens>,
}

impl Guard {
    pub fn new(config: &Config, db: Db, writes: store::batch::Writer) -> Self {
        Guard {
            db,
            writes,
            admin_token: config
                .admin_token()
                .map(|t| SecretString::from(t.to_owned())),
            env: config.env,
            cors_origins: config.cors_origins.clone(),
            locked: Arc::new(AtomicBool::new(false)),
            limiter_keys: Arc::new(Mutex::new(HashMap::new())),
            live: Arc::new(live::LiveTokens::new(Duration::from_millis(
                config.cache_revalidate_ms,
            ))),
        }
    }

    /// The live tokens held in memory, for the event bus to keep current.
    pub fn live_tokens(&self) -> Arc<live::LiveTokens> {
        self.live.clone()
    }

    fn is_admin_token(&self, token: &str) -> bool {
        self.admin_token.as_ref().is_some_and(|admin| {
            bool::from(admin.expose_secret().as_bytes().ct_eq(token.as_bytes()))
        })
    }

    /// Development conveniences apply: the development environment, a caller on loopback.
    pub fn development(&self, creds: &Credentials) -> bool {
        self.env == Environment::Development && creds.local
    }

    /// Development without an admin token, for a caller on loopback: the operator's routes are
    /// open, as in the original's development mode.
    fn dev_fail_open(&self, creds: &Credentials) -> bool {
        self.development(creds) && self.admin_token.is_none()
    }

    /// Fresh install: no admin token configured and no credential ever issued (stored).
    async fn fresh_install(&self) -> Result<bool, AuthError> {
        if self.admin_token.is_some() || self.locked.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if store::settings::install_locked(&self.db).await? {
            self.locked.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        Ok(true)
    }

    /// Anyone is the operator right now (fresh install, or development without an admin token).
    async fn open_to_anyone(&self, creds: &Credentials) -> Result<bool, AuthError> {
        Ok(self.dev_fail_open(creds) || self.fresh_install().await?)
    }

    /// Who `token` belongs to, if it is a live credential at all.
    pub async fn principal(&self, token: &str) -> Result<Option<Principal>, AuthError> {
        if self.is_admin_token(token) {
            return Ok(Some(Principal::Admin));
        }
        let hashed = hash(token);
        let holder = match self.live.get(&hashed) {
            Some(holder) => holder,
            None => match self.read_token(hashed).await? {
                Some(holder) => holder,
                None => return Ok(None),
            },
        };
        let at = chrono::Utc::now();
        Ok(Some(match holder {
            live::Holder::Org { token } => {
                self.writes
                    .write(store::batch::Write::OrgTokenUsed { token, at })
                    .await;
                Principal::Admin
            }
            live::Holder::Workspace { token, workspace } => {
                self.writes
                    .write(store::batch::Write::WorkspaceTokenUsed { token, at })
                    .await;
                Principal::Workspace(workspace)
            }
        }))
    }

    /// Reads the token `hashed` from the database, and holds it in memory when it is live.
    async fn read_token(&self, hashed: [u8; 32]) -> Result<Option<live::Holder>, AuthError> {
        let generation = self.live.generation();
        let (holder, expires_at) = if let Some(token) =
            store::tokens::org_token(&self.db, &hashed).await?
        {
            (live::Holder::Org { token }, None)
        } else if let Some(token) = store::tokens::workspace_for_token(&self.db, &hashed).await? {
            let holder = live::Holder::Workspace {
                token: token.id,
                workspace: token.workspace_id,
            };
            (holder, token.expires_at)
        } else {
            return Ok(None);
        };
        self.live.keep(hashed, holder, expires_at, generation);
        Ok(Some(holder))
    }

    /// The principal of an explicit credential; `None` without one, an error for one that is
    /// not live.
    async fn presented(
        &self,
        creds: &Credentials,
        invalid: AuthError,
    ) -> Result<Option<Principal>, AuthError> {
        match creds.token() {
            None => Ok(None),
            Some(token) => self.principal(token).await?.map(Some).ok_or(invalid),
        }
    }

    /// AdminAuth: the admin token or a live org token (or anyone while the install is fresh or
    /// in development without an admin token).
    pub async fn admin(&self, creds: &Credentials) -> Result<(), AuthError> {
        if self.open_to_anyone(creds).await? {
            return Ok(());
        }
        match creds.token() {
            None => Err(AuthError::AdminRequired),
            Some(token) => match self.principal(token).await? {
                Some(Principal::Admin) => Ok(()),
                _ => Err(AuthError::InvalidAdmin),
            },
        }
    }

    /// WorkspaceAuth bound to `workspace_id`: the operator, or one of that workspace's tokens.
    /// Returns who passed, so a route can tell the operator from the agent.
    pub async fn workspace(
        &self,
        creds: &Credentials,
        workspace_id: Uuid,
    ) -> Result<Principal, AuthError> {
        if self.dev_fail_open(creds) {
            return Ok(Principal::Admin);
        }
        match self.presented(creds, AuthError::InvalidWorkspace).await? {
            Some(Principal::Admin) => Ok(Principal::Admin),
            Some(Principal::Workspace(id)) if id == workspace_id => Ok(Principal::Workspace(id)),
            Some(Principal::Workspace(_)) => Err(AuthError::InvalidWorkspace),
            None if self.fresh_install().await? => Ok(Principal::Admin),
            None => Err(AuthError::MissingWorkspace),
        }
    }

    /// The agent-facing check (register, heartbeat, card, state, discovery, `X-Workspace-ID`
    /// callers): one of `workspace_id`'s own tokens, or the operator's token acting for it. An
    /// explicit credential is required in every mode: no workspace is open because it holds no
    /// token, not even on a fresh install or in development.
    pub async fn agent(
        &self,
        creds: &Credentials,
        workspace_id: Uuid,
    ) -> Result<Principal, AuthError> {
        match self.presented(creds, AuthError::InvalidWorkspace).await? {
            None => Err(AuthError::MissingWorkspace),
            Some(Principal::Admin) => Ok(Principal::Admin),
            Some(Principal::Workspace(id)) if id == workspace_id => Ok(Principal::Workspace(id)),
            Some(Principal::Workspace(_)) => Err(AuthError::InvalidWorkspace),
        }
    }

    /// The canvas: the operator's token (an org token is how a canvas signs in). In development,
    /// for a caller on loopback, a browser `Origin` from `cors_origins` is accepted as the
    /// original's canvas too. Anywhere else an `Origin` is never a credential.
    pub async fn canvas(&self, creds: &Credentials) -> Result<(), AuthError> {
        if creds.token().is_none()
            && self.development(creds)
            && creds
                .origin
                .as_deref()
                .is_some_and(|o| self.cors_origins.iter().any(|allowed| allowed == o))
        {
            return Ok(());
        }
        self.admin(creds).await
    }

    /// Any live credential: the operator or any workspace.
    pub async fn any(&self, creds: &Credentials) -> Result<Principal, AuthError> {
        if self.dev_fail_open(creds) {
            return Ok(Principal::Admin);
        }
        match self.presented(creds, AuthError::InvalidWorkspace).await? {
            Some(principal) => Ok(principal),
            None if self.fresh_install().await? => Ok(Principal::Admin),
            None => Err(AuthError::Required),
        }
    }

    /// The principal of an explicit bearer for the caller-identity rules of A2A and the
    /// registry (`None` without one).
    pub async fn bearer_principal(
        &self,
        creds: &Credentials,
    ) -> Result<Option<Principal>, AuthError> {
        self.presented(creds, AuthError::InvalidWorkspace).await
    }

    /// The rate limiter's bucket for a bearer: `Some(key)` for a live credential (remembered for
    /// a short while), `None` for anything else, which the limiter then counts by address. Only
    /// ever used to choose a bucket; routes check credentials themselves.
    pub async fn limiter_key(&self, token: &str) -> Option<String> {
        let hashed = hash(token);
        let cached = self
            .limiter_keys
            .lock()
            .ok()
            .and_then(|keys| keys.get(&hashed).copied())
            .filter(|(_, at)| at.elapsed() < LIMITER_KEY_TTL);
        let principal = match cached {
            Some((principal, _)) => principal,
            None => {
                let principal = self.principal(token).await.ok().flatten();
                if let Ok(mut keys) = self.limiter_keys.lock() {
                    if keys.len() >= LIMITER_KEY_CAPACITY {
                        keys.retain(|_, (_, at)| at.elapsed() < LIMITER_KEY_TTL);
                    }
                    if keys.len() < LIMITER_KEY_CAPACITY {
                        keys.insert(hashed, (principal, Instant::now()));
                    }
                }
                principal
            }
        };
        principal.map(|_| {
            let digest: String = hashed[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("tok:{digest}")
        })
    }

    /// Forgets the rate limiter's remembered bearers that have gone stale.
    pub fn forget_stale_limiter_keys(&self) {
        if let Ok(mut keys) = self.limiter_keys.lock() {
            keys.retain(|_, (_, at)| at.elapsed() < LIMITER_KEY_TTL);
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

    #[test]
    fn only_loopback_callers_count_as_local_and_credentials_never_print_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer s3cret"));
        headers.insert("origin", HeaderValue::from_static("http://localhost:3000"));
        let local = Credentials::from_request(&headers, Some("127.0.0.1".parse().unwrap()));
        assert!(local.local);
        assert_eq!(local.origin.as_deref(), Some("http://localhost:3000"));
        assert!(!format!("{local:?}").contains("s3cret"));
        let remote = Credentials::from_request(&headers, Some("10.0.0.7".parse().unwrap()));
        assert!(!remote.local);
        assert!(!Credentials::from_request(&headers, None).local);
    }
}
