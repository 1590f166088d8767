//! The HTTP client instant-acme talks to the CA with: hyper over rustls (*ring*, as everywhere
//! in the proxy), the public web roots or the configured `ca_root`, a deadline on every call,
//! and the CA's `Retry-After` on error answers remembered for the issuer's backoff (instant-acme
//! returns the problem document but not that header).

use bytes::Bytes;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The longest one request to the CA may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Hyper = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// See the module docs.
#[derive(Clone)]
pub(crate) struct AcmeHttp {
    client: Hyper,
    retry_after: Arc<Mutex<Option<SystemTime>>>,
}

impl AcmeHttp {
    /// A client that trusts the certificates in `ca_root` (PEM), or the public web roots.
    pub(crate) fn new(ca_root: Option<&Path>) -> Result<AcmeHttp, String> {
        let provider = Arc::new(crate::tls::crypto_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = match ca_root {
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                for c in certs {
                    let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("{}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!("{}: no PEM certificate", path.display()));
                }
                builder.with_root_certificates(roots)
            }
            None => builder.with_root_certificates(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        }
        .with_no_client_auth();
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
            retry_after: Arc::new(Mutex::new(None)),
        })
    }

    /// The latest `Retry-After` an error answer carried since the last call, cleared.
    pub(crate) fn take_retry_after(&self) -> Option<SystemTime> {
        self.retry_after.lock().ok()?.take()
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.client.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
                Err(_) => {
                    return Err(instant_acme::Error::Other(
                        format!("no answer from the ACME server in {REQUEST_TIMEOUT:?}").into(),
                    ))
                }
                Ok(Err(e)) => return Err(instant_acme::Error::Other(chain(&e).into())),
                Ok(Ok(rsp)) => rsp,
            };
            if rsp.status().is_client_error() || rsp.status().is_server_error() {
                if let Some(at) = parse_retry_after(rsp.headers().get(http::header::RETRY_AFTER)) {
                    if let Ok(mut r) = retry_after.lock() {
                        *r = Some(at);
                    }
                }
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// An error and its sources, `: `-separated (hyper's `client error (Connect)` alone does not
/// say that the connection was refused).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// `Retry-After: SECONDS` or `Retry-After: HTTP-DATE` as a point in time.
fn parse_retry_after(v: Option<&http::HeaderValue>) -> Option<SystemTime> {
    let v = v?.to_str().ok()?.trim();
    match v.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(v).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        let v = http::HeaderValue::from_static("120");
        let at = parse_retry_after(Some(&v)).expect("seconds");
        let wait = at.duration_since(SystemTime::now()).expect("future");
        assert!(wait > Duration::from_secs(115) && wait <= Duration::from_secs(120));
        let v = http::HeaderValue::from_static("Wed, 21 Oct 2037 07:28:00 GMT");
        assert!(parse_retry_after(Some(&v)).expect("date") > SystemTime::now());
        assert_eq!(
            parse_retry_after(Some(&http::HeaderValue::from_static("soon"))),
            None
        );
        assert_eq!(parse_retry_after(None), None);
    }
}
