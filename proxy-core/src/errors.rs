//! One place that maps a Pingora error to the status a client sees, and the refusals the
//! service decides itself.
//!
//! Deliberate refusals are answered where they are decided: 408 and 431 (and malformed heads,
//! `front::Malformed`) by the front, the [`Refusal`]s of `request_filter` by the service; those
//! decided mid-proxy (a streamed body over the limit) carry `HTTPStatus` and come through
//! [`answer_for`]. Upstream failures become 502 (refused, reset, garbage) or 504 (timed out).

use pingora_error::{Error, ErrorSource, ErrorType};

/// What a failed request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorAnswer {
    /// Status code; 0 when the client is already gone and nothing can be sent.
    pub status: u16,
    /// Short body text.
    pub body: &'static str,
}

/// A request the service refuses before anything goes upstream; each knows its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Host` (or `:authority`) to route by: 400.
    NoHost,
    /// A host no site serves: 421 (never proxied, never another site's answer).
    UnknownHost,
    /// A path with `.`/`..` segments or an encoded `/` (see `routing::path_is_clean`): 400.
    UncleanPath,
    /// The site has no route for the path: 404.
    NoRoute,
    /// `Content-Length` over the route's body limit: 413.
    BodyTooLarge,
    /// An ACME challenge that is not there (or no webroot configured): 404.
    NoChallenge,
    /// A port-80 request whose `https://` target cannot be written as a `Location`: 400.
    BadRedirectTarget,
    /// The route decider named a site, route or group that does not exist: 500 (a bug in the
    /// decider; logged).
    DeciderBug,
    /// `TRACE` (or `TRACK`): 405, never forwarded. A trace echoes the request, credentials
    /// included, back to whoever can make the browser send one (cross-site tracing); nginx
    /// answers 405 as well.
    Trace,
}

impl Refusal {
    /// The status code it is answered with.
    pub(crate) fn status(self) -> u16 {
        match self {
            Refusal::NoHost | Refusal::UncleanPath | Refusal::BadRedirectTarget => 400,
            Refusal::NoRoute | Refusal::NoChallenge => 404,
            Refusal::BodyTooLarge => 413,
            Refusal::Trace => 405,
            Refusal::UnknownHost => 421,
            Refusal::DeciderBug => 500,
        }
    }

    /// The short body it is answered with.
    pub(crate) fn body(self) -> &'static str {
        body_for(self.status())
    }

    /// The `Allow` value a 405 must carry (RFC 9110 §15.5.6): the methods the proxy forwards.
    pub(crate) const ALLOW: &'static str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
}

/// Maps an error from any phase to the answer the client gets.
pub(crate) fn answer_for(e: &Error) -> ErrorAnswer {
    use ErrorType::*;
    let status = match e.etype() {
        HTTPStatus(code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        // The upstream's connect is retried elsewhere first; what reaches here failed everywhere.
        _ if e.esource() == &ErrorSource::Upstream => 502,
        ReadTimedout if e.esource() == &ErrorSource::Downstream => 408,
        WriteError | ReadError | ConnectionClosed if e.esource() == &ErrorSource::Downstream => 0,
        InvalidHTTPHeader | H1Error | H2Error if e.esource() == &ErrorSource::Downstream => 400,
        _ if e.esource() == &ErrorSource::Downstream => 400,
        _ => 500,
    };
    ErrorAnswer {
        status,
        body: body_for(status),
    }
}

/// The short body for a status the proxy generates.
pub(crate) fn body_for(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        403 => "forbidden\n",
        404 => "not found\n",
        405 => "method not allowed\n",
        408 => "request timeout\n",
        413 => "request body too large\n",
        421 => "misdirected request: this server does not serve that host\n",
        429 => "too many requests\n",
        431 => "request header fields too large\n",
        502 => "bad gateway: the upstream failed\n",
        503 => "service unavailable\n",
        504 => "gateway timeout: the upstream did not answer in time\n",
        _ => "error\n",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(t: ErrorType) -> Box<Error> {
        let mut e = Error::new(t);
        e.as_up();
        e
    }

    #[test]
    fn refusals_know_their_status() {
        for (r, status) in [
            (Refusal::NoHost, 400),
            (Refusal::UnknownHost, 421),
            (Refusal::UncleanPath, 400),
            (Refusal::NoRoute, 404),
            (Refusal::BodyTooLarge, 413),
            (Refusal::NoChallenge, 404),
            (Refusal::BadRedirectTarget, 400),
            (Refusal::DeciderBug, 500),
            (Refusal::Trace, 405),
        ] {
            assert_eq!(r.status(), status, "{r:?}");
            assert_eq!(r.body(), body_for(status));
        }
    }

    #[test]
    fn upstream_failures() {
        assert_eq!(answer_for(&upstream(ErrorType::ConnectRefused)).status, 502);
        assert_eq!(
            answer_for(&upstream(ErrorType::ConnectTimedout)).status,
            504
        );
        assert_eq!(answer_for(&upstream(ErrorType::ReadTimedout)).status, 504);
        assert_eq!(
            answer_for(&upstream(ErrorType::InvalidHTTPHeader)).status,
            502
        );
        assert_eq!(
            answer_for(&Error::new(ErrorType::HTTPStatus(413))).status,
            413
        );
    }
}
