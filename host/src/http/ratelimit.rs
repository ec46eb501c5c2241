//! Per-client rate limit: GCRA buckets (governor) keyed by the peer address. Over the limit
//! answers 429 with `Retry-After`.
//!
//! Keying by bearer token (as the original's successor did, to separate clients behind one NAT)
//! would let anyone escape the limit by sending a fresh random token with every request, since
//! tokens are only verified later, by the route.

use std::net::SocketAddr;
use std::num::NonZeroU32;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderValue;
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

pub struct RateLimiter {
    /// `None` when limiting is off (development fail-open, or a limit of 0).
    buckets: Option<Buckets>,
    limit: u32,
    clock: DefaultClock,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    pub fn new(config: &Config) -> Self {
        let limit = config.rate_limit_per_minute;
        let buckets = NonZeroU32::new(limit)
            .filter(|_| !config.dev_fail_open())
            .map(|per_minute| {
                Gcra::keyed(Quota::per_minute(per_minute))
                    .with_middleware::<StateInformationMiddleware>()
            });
        RateLimiter {
            buckets,
            limit,
            clock: DefaultClock::default(),
        }
    }

    pub fn retain_recent(&self) {
        if let Some(buckets) = &self.buckets {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }
}

fn client_key(req: &Request) -> String {
    match req.extensions().get::<ConnectInfo<SocketAddr>>() {
        Some(ConnectInfo(addr)) => addr.ip().to_string(),
        None => "unknown".to_owned(),
    }
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limiter = &state.limiter;
    let Some(buckets) = &limiter.buckets else {
        let mut response = next.run(req).await;
        response
            .headers_mut()
            .insert("x-ratelimit-limit", HeaderValue::from_static("unlimited"));
        return response;
    };
    match buckets.check_key(&client_key(&req)) {
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
