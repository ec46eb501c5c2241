//! One HTTP exchange with an agent, bounded by a connect, a response-header and an idle timeout
//! (both restarted by the agent's signs of life) and an overall deadline,
//! that reports everything it got: the status, whatever part of the body arrived, and the
//! transport error if one ended it. A body that breaks off after a 2xx is therefore still
//! evidence that the agent received and answered the message.

use std::time::Duration;

use futures::StreamExt as _;
use tokio::time::{Instant, sleep_until};

use crate::events::SignsOfLife;

/// The largest agent response kept; the rest is cut off (and reported as [`TransportError::TooLarge`]).
pub const MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// What ended an exchange early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// No connection could be made (refused, unreachable, connect timeout).
    Connect,
    /// Connected, but no response headers within the header timeout.
    HeaderTimeout,
    /// The response body stalled for longer than the idle timeout.
    IdleTimeout,
    /// The caller's overall deadline passed.
    Deadline,
    /// The agent reset the connection.
    Reset,
    /// The connection closed before the message was complete.
    Eof,
    /// The response exceeded [`MAX_RESPONSE_BYTES`].
    TooLarge,
    Other,
}

impl TransportError {
    /// Errors that mean "the agent is there but busy": worth queueing the message for later.
    pub fn is_busy(self) -> bool {
        matches!(
            self,
            Self::HeaderTimeout | Self::IdleTimeout | Self::Deadline | Self::Reset | Self::Eof
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "could not connect to the agent",
            Self::HeaderTimeout => "the agent did not answer in time",
            Self::IdleTimeout => "the agent's answer stalled",
            Self::Deadline => "the caller's timeout passed",
            Self::Reset => "the agent reset the connection",
            Self::Eof => "the connection closed before the answer was complete",
            Self::TooLarge => "the agent's answer is larger than 10 MiB",
            Self::Other => "the exchange with the agent failed",
        }
    }
}

/// Timeouts of one exchange (the connect timeout belongs to the client).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
    /// When the whole exchange must be over.
    pub deadline: Instant,
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct Forwarded {
    /// `None` when no response headers arrived.
    pub status: Option<u16>,
    /// The body as far as it arrived.
    pub body: Vec<u8>,
    pub error: Option<TransportError>,
    pub elapsed: Duration,
}

/// POSTs `body` as JSON to `url` (with `traceparent`, when the call is part of a trace) and
/// reads the answer within `timeouts`. Each of `alive`'s signs of life (the target's events:
/// heartbeats, task updates, activity) restarts the header and idle timers; the deadline stays.
pub async fn forward(
    client: &reqwest::Client,
    url: reqwest::Url,
    body: Vec<u8>,
    traceparent: Option<String>,
    timeouts: Timeouts,
    mut alive: SignsOfLife,
) -> Forwarded {
    let started = Instant::now();
    let mut out = Forwarded::default();
    let mut request = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(body).send();
    let header = (timeouts.header, TransportError::HeaderTimeout);
    let response = match bounded(request, header, timeouts.deadline, &mut alive).await {
        Err(kind) => {
            out.error = Some(kind);
            out.elapsed = started.elapsed();
            return out;
        }
        Ok(Err(err)) => {
            out.error = Some(classify(&err));
            out.elapsed = started.elapsed();
            return out;
        }
        Ok(Ok(response)) => response,
    };
    out.status = Some(response.status().as_u16());
    let mut stream = response.bytes_stream();
    let idle = (timeouts.idle, TransportError::IdleTimeout);
    loop {
        match bounded(stream.next(), idle, timeouts.deadline, &mut alive).await {
            Err(kind) => {
                out.error = Some(kind);
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                out.error = Some(classify(&err));
                break;
            }
            Ok(Some(Ok(chunk))) => {
                let room = MAX_RESPONSE_BYTES - out.body.len();
                if chunk.len() > room {
                    out.body.extend_from_slice(&chunk[..room]);
                    out.error = Some(TransportError::TooLarge);
                    break;
                }
                out.body.extend_from_slice(&chunk);
            }
        }
    }
    out.elapsed = started.elapsed();
    out
}

/// Awaits `work` for at most `step` (the timer restarting at each sign of life) and never past
/// `deadline`; on expiry, the error `step` names, or [`TransportError::Deadline`].
async fn bounded<F: Future>(
    work: F,
    (step, kind): (Duration, TransportError),
    deadline: Instant,
    alive: &mut SignsOfLife,
) -> Result<F::Output, TransportError> {
    tokio::pin!(work);
    loop {
        let step_end = Instant::now() + step;
        let (until, kind) = if deadline <= step_end {
            (deadline, TransportError::Deadline)
        } else {
            (step_end, kind)
        };
        tokio::select! {
            output = &mut work => return Ok(output),
            () = sleep_until(until) => return Err(kind),
            () = alive.next() => {}
        }
    }
}

/// Names a client error by what it says about the agent, from the innermost cause outwards.
fn classify(err: &reqwest::Error) -> TransportError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            match io.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe => return TransportError::Reset,
                ErrorKind::UnexpectedEof => return TransportError::Eof,
                ErrorKind::ConnectionRefused => return TransportError::Connect,
                ErrorKind::TimedOut => return TransportError::HeaderTimeout,
                _ => {}
            }
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_incomplete_message()
        {
            return TransportError::Eof;
        }
        source = cause.source();
    }
    if err.is_connect() {
        TransportError::Connect
    } else if err.is_timeout() {
        TransportError::HeaderTimeout
    } else {
        TransportError::Other
    }
}
