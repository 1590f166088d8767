//! Several instances behind one load balancer, sharing `[redis]`.
//!
//! - **One orders at a time**: before ordering a site's certificate an instance takes the lock
//!   `PREFIXacme:lock:SITE` (`SET … NX PX`, [`LOCK_TTL`]; released when done, and it expires
//!   if the instance dies), so two instances do not both order and spend the CA's rate limits.
//!   An instance that finds the lock taken waits and looks again.
//! - **The others use its certificate**: the issuing instance writes the chain and key to
//!   `PREFIXacme:cert:SITE`; every instance reads it every `tls.reload_interval` and installs
//!   (and saves) a certificate that expires later than its own.
//! - **Either instance answers HTTP-01**: the key authorization is also written to
//!   `PREFIXacme:http01:TOKEN` (expiring after [`LOCK_TTL`]), and a port-80 listener that does
//!   not hold the token itself reads it from there, so the CA may reach any instance.
//!
//! TLS-ALPN-01 is answered only by the instance that orders (certificate selection cannot wait
//! for Redis); with several instances behind a load balancer, use HTTP-01.
//!
//! The private key travels through Redis: the Redis of `[redis]` must be as private as the
//! state directory (loopback or a private network, as docs/scale-out.md requires already).
//! While Redis is down each instance orders on its own, as without `[redis]`.

use super::store::StoredCert;
use crate::redis_link::{FailKind, Op, RedisLink};
use redis::FromRedisValue;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// How long the order lock and a published HTTP-01 answer live at most.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(600);

/// What taking the order lock gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// This instance orders.
    Acquired,
    /// Another instance is ordering.
    HeldByOther,
    /// Redis did not answer: order alone.
    Unavailable,
}

#[derive(Serialize, Deserialize)]
struct SharedCert {
    chain: String,
    key: String,
}

/// The ACME keys of one `[redis]` (see the module docs).
#[derive(Debug)]
pub(crate) struct Shared {
    link: Arc<RedisLink>,
}

impl Shared {
    pub(crate) fn new(link: Arc<RedisLink>) -> Shared {
        Shared { link }
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}acme:{kind}:{name}", self.link.settings().key_prefix)
    }

    /// Runs `cmd` with the link's connect timeout (ACME is not on the request path); `None`
    /// when Redis is down, slow or errs (counted as `op="acme"`).
    async fn run<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Option<T> {
        let mut conn = self.link.conn()?;
        let limit = self.link.settings().connect_timeout;
        match tokio::time::timeout(limit, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.link.succeeded();
                Some(v)
            }
            Ok(Err(e)) => {
                self.link.failed(Op::Acme, FailKind::of(&e), &e);
                None
            }
            Err(_) => {
                self.link.failed(Op::Acme, FailKind::Timeout, &"no answer");
                None
            }
        }
    }

    /// Takes the order lock for `site`.
    pub(crate) async fn try_lock(&self, site: &str) -> Lock {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("lock", site))
            .arg(self.link.instance_id())
            .arg("NX")
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64);
        match self.run::<Option<String>>(&cmd).await {
            Some(Some(_)) => Lock::Acquired,
            Some(None) => Lock::HeldByOther,
            None => Lock::Unavailable,
        }
    }

    /// Releases the lock for `site` if this instance still holds it.
    pub(crate) async fn unlock(&self, site: &str) {
        let mut eval = redis::cmd("EVAL");
        eval.arg(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
        )
        .arg(1)
        .arg(self.key("lock", site))
        .arg(self.link.instance_id());
        let _ = self.run::<i64>(&eval).await;
    }

    /// Publishes `site`'s new certificate for the other instances.
    pub(crate) async fn publish_cert(&self, site: &str, cert: &StoredCert) {
        let Ok(body) = serde_json::to_string(&SharedCert {
            chain: cert.chain_pem.clone(),
            key: cert.key_pem.clone(),
        }) else {
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("cert", site)).arg(body);
        let _ = self.run::<()>(&cmd).await;
    }

    /// The certificate an instance published for `site`, if any (and usable).
    pub(crate) async fn fetch_cert(
        &self,
        site: &str,
    ) -> Option<(StoredCert, rustls::sign::CertifiedKey)> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("cert", site));
        let body: String = self.run::<Option<String>>(&cmd).await??;
        let shared: SharedCert = serde_json::from_str(&body).ok()?;
        StoredCert::from_pem(shared.chain, shared.key).ok()
    }

    /// Publishes an HTTP-01 answer for every instance's port-80 listener.
    pub(crate) async fn publish_http01(&self, token: &str, key_authorization: &str) {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("http01", token))
            .arg(key_authorization)
            .arg("PX")
            .arg(LOCK_TTL.as_millis() as u64);
        let _ = self.run::<()>(&cmd).await;
    }

    /// Withdraws an HTTP-01 answer.
    pub(crate) async fn withdraw_http01(&self, token: &str) {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key("http01", token));
        let _ = self.run::<i64>(&cmd).await;
    }

    /// The HTTP-01 answer another instance published for `token`.
    pub(crate) async fn http01(&self, token: &str) -> Option<String> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key("http01", token));
        self.run::<Option<String>>(&cmd).await?
    }
}
