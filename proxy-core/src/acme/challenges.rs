//! HTTP-01 answers in flight, read by the port-80 listener.
//!
//! (TLS-ALPN-01 certificates in flight live in the
//! [`SniResolver`](crate::tls::SniResolver), which picks them during the handshake.)

use super::shared::Shared;
use crate::redis_link::RedisLink;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The HTTP-01 key authorizations the issuer has published, by token; with `[redis]`, also
/// those other instances published.
#[derive(Debug, Default)]
pub struct Challenges {
    http01: Mutex<HashMap<String, String>>,
    shared: Option<Arc<Shared>>,
}

impl Challenges {
    /// No challenge in flight; `redis` shares them (and the order lock and the certificates)
    /// with the other instances.
    pub fn new(redis: Option<Arc<RedisLink>>) -> Challenges {
        Challenges {
            http01: Mutex::new(HashMap::new()),
            shared: redis.map(|l| Arc::new(Shared::new(l))),
        }
    }

    /// The instances' shared ACME keys, with `[redis]`.
    pub(crate) fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// Publishes the answer to `token` (here and, with `[redis]`, for every instance).
    pub(crate) async fn publish_http01(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.http01.lock() {
            m.insert(token.to_string(), key_authorization.to_string());
        }
        if let Some(s) = &self.shared {
            s.publish_http01(token, key_authorization).await;
        }
    }

    /// Withdraws the answer to `token`.
    pub(crate) async fn withdraw_http01(&self, token: &str) {
        if let Ok(mut m) = self.http01.lock() {
            m.remove(token);
        }
        if let Some(s) = &self.shared {
            s.withdraw_http01(token).await;
        }
    }

    /// The key authorization to serve at `/.well-known/acme-challenge/TOKEN`: this process's,
    /// else (with `[redis]`) one another instance published.
    pub async fn http01(&self, token: &str) -> Option<String> {
        let local = self.http01.lock().ok()?.get(token).cloned();
        match (local, &self.shared) {
            (Some(answer), _) => Some(answer),
            (None, Some(s)) if super::webroot::valid_token(token) => s.http01(token).await,
            (None, _) => None,
        }
    }
}
