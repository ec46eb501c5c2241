//! Per-client rate limit: GCRA buckets (governor). A request carrying a live credential counts
//! against that credential's bucket (the operator's token, an org token, or one workspace's
//! token), so an agent's heartbeats never share a bucket with anonymous traffic from its
//! address, and clients behind one proxy are told apart. Anything else counts against its
//! address: the TCP peer, or, when the peer is a configured trusted proxy, the client its
//! `X-Forwarded-For` names. Over the limit answers 429 with `Retry-After`.
//!
//! A bearer that is not a live credential counts by address: keying on unverified tokens would
//! let anyone escape the limit by sending a fresh random token with every request.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use super::AppState;
use super::error::ApiError;
use crate::config::Config;

type Buckets =
    Gcra<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// An address block: an IP address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (ip, prefix) = match raw.split_once('/') {
            Some((ip, prefix)) => (ip.parse::<IpAddr>().ok()?, prefix.parse::<u8>().ok()?),
            None => {
                let ip = raw.parse::<IpAddr>().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr {
            network: ip,
            prefix,
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Parses `trusted_proxies`; an entry that is neither an address nor a block stops the host.
pub fn parse_trusted_proxies(entries: &[String]) -> anyhow::Result<Vec<Cidr>> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            Cidr::parse(entry).with_context(|| {
                format!("trusted_proxies: {entry:?} is not an IP address or CIDR block")
            })
        })
        .collect()
}

pub struct RateLimiter {
    /// `None` when limiting is off (a limit of 0).
    buckets: Option<Buckets>,
    limit: u32,
    clock: DefaultClock,
    trusted_proxies: Vec<Cidr>,
    /// Development without an admin token: callers on loopback are not limited.
    dev_fail_open: bool,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let limit = config.rate_limit_per_minute;
        let buckets = NonZeroU32::new(limit).map(|per_minute| {
            Gcra::keyed(Quota::per_minute(per_minute))
                .with_middleware::<StateInformationMiddleware>()
        });
        Ok(RateLimiter {
            buckets,
            limit,
            clock: DefaultClock::default(),
            trusted_proxies: parse_trusted_proxies(&config.trusted_proxies)?,
            dev_fail_open: config.dev_fail_open(),
        })
    }

    pub fn retain_recent(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }

    /// The client's address: the TCP peer, unless the peer is a trusted proxy, in which case
    /// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy (entries left
    /// of it could have been written by the client).
    fn client_address(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted_proxies.iter().any(|p| p.contains(ip));
        if !trusted(peer) {
            return peer;
        }
        let forwarded: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .map(|entry| entry.parse::<IpAddr>().ok())
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted(*ip))
            .unwrap_or(peer)
    }
}

/// The address a request counts against (see [`RateLimiter::client_address`]).
pub fn client_address(state: &AppState, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
    state.limiter.client_address(headers, peer)
}

/// What a request counts against before its bearer is looked at: its address, and the bearer
/// (owned, so nothing borrowed from the request, whose body is not `Sync`, lives across the
/// lookup).
fn bucket_inputs(state: &AppState, req: &Request) -> (String, Option<secrecy::SecretString>) {
    let by_address = match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => format!(
            "ip:{}",
            state.limiter.client_address(req.headers(), addr.ip())
        ),
        None => "ip:unknown".to_owned(),
    };
    let bearer = crate::auth::bearer(req.headers()).map(secrecy::SecretString::from);
    (by_address, bearer)
}

/// The bucket: the credential's when the bearer is a live one, else the address.
async fn bucket_key(
    state: &AppState,
    by_address: String,
    bearer: Option<secrecy::SecretString>,
) -> String {
    use secrecy::ExposeSecret as _;
    match bearer {
        Some(token) => state
            .svc
            .guard
            .limiter_key(token.expose_secret())
            .await
            .unwrap_or(by_address),
        None => by_address,
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limiter = &state.limiter;
    let local = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| addr.ip().is_loopback());
    let buckets = match &limiter.buckets {
        Some(buckets) if !(limiter.dev_fail_open && local) => buckets,
        _ => {
            let mut response = next.run(req).await;
            response
                .headers_mut()
                .insert("x-ratelimit-limit", HeaderValue::from_static("unlimited"));
            return response;
        }
    };
    let (by_address, bearer) = bucket_inputs(&state, &req);
    let key = bucket_key(&state, by_address, bearer).await;
    match buckets.check_key(&key) {
        Ok(snapshot) => {
            let mut response = next.run(req).await;
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(limiter.limit));
            headers.insert(
                "x-ratelimit-remaining",
                HeaderValue::from(snapshot.remaining_burst_capacity()),
            );
            response
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(limiter.clock.now());
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut response = ApiError::RateLimited { retry_after_secs }.into_response();
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(limiter.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
            headers.insert("x-ratelimit-reset", HeaderValue::from(retry_after_secs));
            response
        }
    }
}

/// A per-key limiter for one kind of request (org token mints per client, MCP calls per
/// workspace), on top of the global per-address limit.
pub struct KeyedLimiter {
    buckets: Option<governor::DefaultKeyedRateLimiter<String>>,
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter").finish_non_exhaustive()
    }
}

impl KeyedLimiter {
    /// `None` (no limit) when `count` is 0.
    pub fn new(quota: fn(NonZeroU32) -> Quota, count: u32) -> Self {
        KeyedLimiter {
            buckets: NonZeroU32::new(count).map(|n| Gcra::keyed(quota(n))),
        }
    }

    /// `Err(seconds to wait)` when `key` is over its quota.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(buckets) = &self.buckets else {
            return Ok(());
        };
        buckets.check_key(&key.to_owned()).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                .max(1)
        })
    }

    pub fn retain_recent(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> RateLimiter {
        RateLimiter::new(&Config {
            trusted_proxies: trusted.iter().map(|s| (*s).to_owned()).collect(),
            ..Config::default()
        })
        .unwrap()
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn address_blocks_match_by_prefix_on_both_families() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(
            block.contains("::ffff:10.1.0.9".parse().unwrap()),
            "IPv4-mapped"
        );
        let v6 = Cidr::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("127.0.0.1"), Cidr::parse("127.0.0.1/32"));
        for bad in ["", "10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
        assert!(parse_trusted_proxies(&["10.0.0.1".into(), "nonsense".into()]).is_err());
    }

    #[test]
    fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        let untrusting = limiter(&[]);
        assert_eq!(
            untrusting.client_address(&forwarded("198.51.100.1"), proxy),
            proxy,
            "no trusted proxies: the peer is the client"
        );
        let trusting = limiter(&["10.0.0.0/24"]);
        assert_eq!(
            trusting.client_address(&forwarded("203.0.113.9"), proxy),
            client
        );
        // A client that writes its own X-Forwarded-For gets its address appended by the proxy:
        // the right-most untrusted entry is the one the proxy saw.
        assert_eq!(
            trusting.client_address(&forwarded("1.2.3.4, 203.0.113.9"), proxy),
            client
        );
        assert_eq!(
            trusting.client_address(&forwarded("203.0.113.9, 10.0.0.7"), proxy),
            client,
            "chained trusted proxies are skipped"
        );
        assert_eq!(
            trusting.client_address(&forwarded("garbage"), proxy),
            proxy,
            "an unreadable header falls back to the peer"
        );
        assert_eq!(
            trusting.client_address(&forwarded("203.0.113.9"), client),
            client,
            "from an untrusted peer the header is ignored"
        );
    }
}
