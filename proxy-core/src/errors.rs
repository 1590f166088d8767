//! One place that maps a Pingora error to the status a client sees.
//!
//! Deliberate refusals are answered where they are decided (408 and 431 by the front, 400, 404,
//! 413 and 421 in `request_filter`); those decided mid-proxy (a streamed body over the limit)
//! carry `HTTPStatus` and come through here. Upstream failures become 502 (refused, reset,
//! garbage) or 504 (timed out).

use pingora_error::{Error, ErrorSource, ErrorType};

/// What a failed request is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// Status code; 0 when the client is already gone and nothing can be sent.
    pub status: u16,
    /// Short body text.
    pub body: &'static str,
}

/// Maps an error from any phase to the answer the client gets.
pub fn answer_for(e: &Error) -> ErrorAnswer {
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
pub fn body_for(status: u16) -> &'static str {
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
