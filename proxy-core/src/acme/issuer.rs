//! The issuer: one loop per ACME site that orders, installs and renews its certificate.
//!
//! A site's loop, forever:
//!
//! 1. **When**: now if the site has no certificate, or one that does not cover its `hosts`;
//!    otherwise at two thirds of the certificate's lifetime, up to 1/30 of the lifetime earlier
//!    at random (jitter, so certificates issued together are not renewed together), or earlier
//!    if the CA's renewal information (RFC 9773) suggests a window that starts sooner (a random
//!    moment in that window; the window is asked again when the CA says to).
//! 2. **Order** ([`Issuer::order`]): the account (saved in the state directory, created on first
//!    use), a new order for the hosts (naming the certificate it replaces, when the CA has
//!    renewal information), the chosen challenge answered for every pending authorization,
//!    finalized with a fresh key, the chain downloaded.
//! 3. **Install**: the chain and key are saved (0600) and handed to the
//!    [`SniResolver`](crate::tls::SniResolver): new handshakes get them at once.
//! 4. **With `[redis]`** (several instances): the order is made under a lock, its certificate
//!    published for the other instances, which install it (see `shared`).
//! 5. **On failure**: logged (with the CA's problem document), counted, and tried again after
//!    [`AcmeSettings::first_retry`], doubled after each further failure up to
//!    [`MAX_RETRY`](super::MAX_RETRY), never sooner than the CA's `Retry-After`. The current
//!    certificate, if any, keeps serving.

use super::challenges::Challenges;
use super::client::AcmeHttp;
use super::settings::{AcmeSettings, AcmeSite, ChallengeKind, MAX_RETRY};
use super::shared::Lock;
use super::store::{StateDir, StoredCert};
use crate::exposition;
use crate::tls::{CertInfo, SniResolver};
use async_trait::async_trait;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewAccount,
    NewOrder, Order, OrderStatus, RetryPolicy,
};
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::proto::MetricFamily;
use rand::Rng;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the CA may take to validate every challenge of an order.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(120);

/// How long the CA may take to issue once the order is finalized.
const ISSUANCE_TIMEOUT: Duration = Duration::from_secs(120);

/// How soon to look again when another instance holds the order lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Bounds on how soon the CA's renewal information is asked again.
const ARI_RECHECK: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(24 * 3600));

/// Why the issuer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The state directory cannot be created or written.
    #[error(
        "acme.state_dir = {path:?}: {source}; create it writable by the proxy's user (mode 0700)"
    )]
    StateDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `ca_root` file cannot be used.
    #[error("acme.ca_root: {0}")]
    CaRoot(String),
}

/// One failed attempt: what failed, and the earliest moment the CA allows the next.
#[derive(Debug)]
struct Failure {
    what: String,
    retry_after: Option<SystemTime>,
}

impl Failure {
    fn new(what: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            retry_after: None,
        }
    }
}

/// Per-site counters of the issuer, exported at scrape time.
#[derive(Debug)]
pub struct AcmeStats {
    sites: Vec<SiteStats>,
}

#[derive(Debug)]
struct SiteStats {
    name: String,
    issued: AtomicU64,
    failed: AtomicU64,
    /// Unix seconds of the next order attempt (renewal, or retry after a failure).
    next_attempt: AtomicI64,
}

impl AcmeStats {
    fn new(sites: &[AcmeSite]) -> AcmeStats {
        AcmeStats {
            sites: sites
                .iter()
                .map(|s| SiteStats {
                    name: s.name.clone(),
                    issued: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    next_attempt: AtomicI64::new(0),
                })
                .collect(),
        }
    }

    /// Certificates issued and orders failed for `site` since start.
    pub fn orders(&self, site: &str) -> Option<(u64, u64)> {
        let s = self.sites.iter().find(|s| s.name == site)?;
        Some((
            s.issued.load(Ordering::Relaxed),
            s.failed.load(Ordering::Relaxed),
        ))
    }

    /// `galion_edge_acme_orders_total` and `galion_edge_acme_next_attempt_timestamp_seconds`.
    pub(crate) fn metric_families(&self) -> exposition::Result<Vec<MetricFamily>> {
        let mut out = exposition::counters(
            "galion_edge_acme_orders_total",
            "ACME orders by site and result: issued (a certificate installed) or failed (the \
             current certificate, if any, keeps serving; the order is retried with backoff).",
            &["site", "result"],
            self.sites.iter().flat_map(|s| {
                [
                    (
                        vec![s.name.as_str(), "issued"],
                        s.issued.load(Ordering::Relaxed),
                    ),
                    (
                        vec![s.name.as_str(), "failed"],
                        s.failed.load(Ordering::Relaxed),
                    ),
                ]
            }),
        )?;
        out.extend(exposition::gauges(
            "galion_edge_acme_next_attempt_timestamp_seconds",
            "When the issuer next orders the site's certificate (renewal, or retry after a \
             failure), Unix seconds.",
            &["site"],
            self.sites.iter().map(|s| {
                (
                    vec![s.name.as_str()],
                    s.next_attempt.load(Ordering::Relaxed),
                )
            }),
        )?);
        Ok(out)
    }
}

/// The ACME issuer as a Pingora background service (see the module docs).
pub struct AcmeService {
    issuer: Arc<Issuer>,
}

struct Issuer {
    settings: AcmeSettings,
    state: StateDir,
    http: AcmeHttp,
    challenges: Arc<Challenges>,
    certs: Arc<SniResolver>,
    account: tokio::sync::Mutex<Option<Account>>,
    stats: Arc<AcmeStats>,
}

impl AcmeService {
    /// Opens the state directory, installs the certificates saved there in `certs` (so a
    /// restart serves at once, without asking the CA), and prepares the client. Fails when the
    /// state directory or `ca_root` cannot be used.
    pub fn new(
        settings: AcmeSettings,
        challenges: Arc<Challenges>,
        certs: Arc<SniResolver>,
    ) -> Result<AcmeService, AcmeError> {
        let state = StateDir::open(&settings.state_dir)
            .and_then(|s| s.check_writable().map(|()| s))
            .map_err(|source| AcmeError::StateDir {
                path: settings.state_dir.display().to_string(),
                source,
            })?;
        let http = AcmeHttp::new(settings.ca_root.as_deref()).map_err(AcmeError::CaRoot)?;
        for site in &settings.sites {
            match state.load_cert(&site.name) {
                Ok(Some((stored, ck))) => {
                    info!(
                        "acme: {}: serving the saved certificate (expires {})",
                        site.name,
                        httpdate::fmt_http_date(stored.info.not_after)
                    );
                    certs.install(&site.name, ck, stored.info);
                }
                Ok(None) => {}
                Err(e) => warn!(
                    "acme: {}: saved certificate unusable, ordering a new one: {e}",
                    site.name
                ),
            }
        }
        let stats = Arc::new(AcmeStats::new(&settings.sites));
        Ok(AcmeService {
            issuer: Arc::new(Issuer {
                settings,
                state,
                http,
                challenges,
                certs,
                account: tokio::sync::Mutex::new(None),
                stats,
            }),
        })
    }

    /// The issuer's counters (for `/metrics`).
    pub fn stats(&self) -> Arc<AcmeStats> {
        self.issuer.stats.clone()
    }
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, shutdown: ShutdownWatch) {
        let mut loops: Vec<_> = (0..self.issuer.settings.sites.len())
            .map(|i| {
                let issuer = self.issuer.clone();
                let shutdown = shutdown.clone();
                tokio::spawn(async move { issuer.run_site(i, shutdown).await })
            })
            .collect();
        if self.issuer.challenges.shared().is_some() {
            let issuer = self.issuer.clone();
            let mut shutdown = shutdown.clone();
            loops.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(issuer.settings.check_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        _ = tick.tick() => {
                            for site in &issuer.settings.sites {
                                issuer.adopt_shared(site).await;
                            }
                        }
                    }
                }
            }));
        }
        for l in loops {
            let _ = l.await;
        }
    }
}

/// When a certificate is due for renewal by its lifetime: two thirds of the way from
/// `not_before` to `not_after`. The issuer renews up to 1/30 of the lifetime earlier (jitter), or
/// earlier still when the CA's renewal information suggests it.
pub fn renewal_time(info: &CertInfo) -> SystemTime {
    let lifetime = info
        .not_after
        .duration_since(info.not_before)
        .unwrap_or_default();
    info.not_before + lifetime * 2 / 3
}

/// Sleeps until `at` (in steps of at most an hour, so a clock change is noticed); `false` if
/// the server is shutting down.
async fn sleep_until(at: SystemTime, shutdown: &mut ShutdownWatch) -> bool {
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let Ok(left) = at.duration_since(SystemTime::now()) else {
            return true;
        };
        if left.is_zero() {
            return true;
        }
        tokio::select! {
            _ = shutdown.changed() => return false,
            _ = tokio::time::sleep(left.min(Duration::from_secs(3600))) => {}
        }
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The wait after the `failures`-th failure in a row: `first` doubled each time, at most
/// [`MAX_RETRY`], plus up to 10% at random.
fn backoff(first: Duration, failures: u32) -> Duration {
    let base = first
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(MAX_RETRY.max(first));
    base + base.mul_f64(rand::thread_rng().gen_range(0.0..0.1))
}

impl Issuer {
    async fn run_site(&self, i: usize, mut shutdown: ShutdownWatch) {
        let site = &self.settings.sites[i];
        let stats = &self.stats.sites[i];
        let mut failures = 0u32;
        let mut retry_at: Option<SystemTime> = None;
        let expiry = |issuer: &Issuer| issuer.certs.installed(&site.name).map(|(i, _)| i.not_after);
        loop {
            self.adopt_shared(site).await;
            let (renew_at, recheck) = match retry_at.take() {
                Some(t) => (t, None),
                None => self.plan(site).await,
            };
            let planned_for = expiry(self);
            stats
                .next_attempt
                .store(unix_secs(renew_at), Ordering::Relaxed);
            let wake = recheck.map_or(renew_at, |r| r.min(renew_at));
            if !sleep_until(wake, &mut shutdown).await {
                return;
            }
            self.adopt_shared(site).await;
            if expiry(self) != planned_for {
                // Another instance's certificate was installed meanwhile: plan anew.
                failures = 0;
                continue;
            }
            if wake < renew_at {
                continue; // time to ask the CA's renewal information again
            }
            let shared = self.challenges.shared().cloned();
            if let Some(s) = &shared {
                match s.try_lock(&site.name).await {
                    Lock::Acquired => {
                        // The instance that held the lock may have published just before
                        // letting go: look once more under the lock.
                        self.adopt_shared(site).await;
                        if expiry(self) != planned_for {
                            s.unlock(&site.name).await;
                            failures = 0;
                            continue;
                        }
                    }
                    Lock::HeldByOther => {
                        log::debug!("acme: {}: another instance is ordering", site.name);
                        retry_at = Some(SystemTime::now() + LOCK_WAIT);
                        continue;
                    }
                    Lock::Unavailable => warn!(
                        "acme: {}: Redis does not answer; ordering without the shared lock",
                        site.name
                    ),
                }
            }
            let ordered = self.order(site).await;
            if let Some(s) = &shared {
                if ordered.is_ok() {
                    if let Ok(Some((stored, _))) = self.state.load_cert(&site.name) {
                        s.publish_cert(&site.name, &stored).await;
                    }
                }
                s.unlock(&site.name).await;
            }
            match ordered {
                Ok(info) => {
                    failures = 0;
                    stats.issued.fetch_add(1, Ordering::Relaxed);
                    info!(
                        "acme: {}: certificate issued for {} by {}, valid until {}",
                        site.name,
                        info.names.join(", "),
                        info.issuer,
                        httpdate::fmt_http_date(info.not_after)
                    );
                }
                Err(f) => {
                    failures += 1;
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    let mut at = SystemTime::now() + backoff(self.settings.first_retry, failures);
                    if let Some(ca) = f.retry_after {
                        at = at.max(ca);
                    }
                    warn!(
                        "acme: {}: ordering a certificate for {} failed ({} in a row): {}; {}, next attempt {}",
                        site.name,
                        site.hosts.join(", "),
                        failures,
                        f.what,
                        if self.certs.installed(&site.name).is_some() {
                            "the current certificate keeps serving"
                        } else {
                            "https clients for these names are refused until then"
                        },
                        httpdate::fmt_http_date(at)
                    );
                    retry_at = Some(at);
                }
            }
        }
    }

    /// With `[redis]`: installs (and saves) the certificate another instance published for
    /// `site`, if it expires later than the one served.
    async fn adopt_shared(&self, site: &AcmeSite) {
        let Some(shared) = self.challenges.shared() else {
            return;
        };
        let Some((stored, ck)) = shared.fetch_cert(&site.name).await else {
            return;
        };
        let current = self.certs.installed(&site.name).map(|(i, _)| i.not_after);
        if current.is_some_and(|c| c >= stored.info.not_after) || !stored.info.covers(&site.hosts) {
            return;
        }
        let info = stored.info.clone();
        let state = self.state.clone();
        let name = site.name.clone();
        let saved = tokio::task::spawn_blocking(move || state.save_cert(&name, &stored)).await;
        if !matches!(saved, Ok(Ok(()))) {
            warn!(
                "acme: {}: could not save the shared certificate in {}",
                site.name,
                self.state.path().display()
            );
        }
        info!(
            "acme: {}: installed the certificate another instance obtained (valid until {})",
            site.name,
            httpdate::fmt_http_date(info.not_after)
        );
        self.certs.install(&site.name, ck, info);
    }

    /// When to renew `site`'s certificate, and when to ask the CA's renewal information again.
    async fn plan(&self, site: &AcmeSite) -> (SystemTime, Option<SystemTime>) {
        let now = SystemTime::now();
        let Some((info, leaf)) = self.certs.installed(&site.name) else {
            return (now, None);
        };
        if !info.covers(&site.hosts) {
            info!(
                "acme: {}: the certificate covers {}, the site is {}: ordering one for the site",
                site.name,
                info.names.join(", "),
                site.hosts.join(", ")
            );
            return (now, None);
        }
        let lifetime = info
            .not_after
            .duration_since(info.not_before)
            .unwrap_or_default();
        let jitter = lifetime.mul_f64(rand::thread_rng().gen_range(0.0..(1.0 / 30.0)));
        let mut renew_at = renewal_time(&info).checked_sub(jitter).unwrap_or(now);
        let mut recheck = None;
        if let Some((window, again)) = self.renewal_info(&leaf).await {
            let (start, end) = window;
            let span = end.duration_since(start).unwrap_or_default();
            let pick = start + span.mul_f64(rand::thread_rng().gen());
            renew_at = renew_at.min(pick);
            recheck = Some(now + again.clamp(ARI_RECHECK.0, ARI_RECHECK.1));
        }
        (renew_at, recheck)
    }

    /// The CA's suggested renewal window for `leaf` and when to ask again, if the CA has
    /// renewal information (RFC 9773).
    async fn renewal_info(
        &self,
        leaf: &CertificateDer<'static>,
    ) -> Option<((SystemTime, SystemTime), Duration)> {
        let id = CertificateIdentifier::try_from(leaf).ok()?;
        let account = self.account().await.ok()?;
        match account.renewal_info(&id).await {
            Ok((ri, again)) => Some((
                (
                    SystemTime::from(ri.suggested_window.start),
                    SystemTime::from(ri.suggested_window.end),
                ),
                again,
            )),
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(e) => {
                warn!(
                    "acme: renewal information unavailable ({e}); renewing at 2/3 of the lifetime"
                );
                None
            }
        }
    }

    /// The account: loaded, or registered with the CA and saved on first use.
    async fn account(&self) -> Result<Account, Failure> {
        let mut cached = self.account.lock().await;
        if let Some(a) = cached.as_ref() {
            return Ok(a.clone());
        }
        let directory = &self.settings.directory;
        let builder = || Account::builder_with_http(Box::new(self.http.clone()));
        let saved = self
            .state
            .load_account(directory)
            .map_err(|e| Failure::new(format!("account file: {e}")))?;
        let account = match saved {
            Some(credentials) => builder()
                .from_credentials(credentials)
                .await
                .map_err(|e| self.fail("loading the account", e))?,
            None => {
                let contact: Vec<&str> = self.settings.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| self.fail("registering an account", e))?;
                self.state
                    .save_account(directory, &credentials)
                    .map_err(|e| Failure::new(format!("saving the account: {e}")))?;
                info!("acme: registered an account with {directory}");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    fn fail(&self, stage: &str, e: instant_acme::Error) -> Failure {
        Failure {
            what: format!("{stage}: {e}"),
            retry_after: self.http.take_retry_after(),
        }
    }

    /// Orders, validates, saves and installs a certificate for `site`.
    async fn order(&self, site: &AcmeSite) -> Result<CertInfo, Failure> {
        // A `Retry-After` left from an earlier attempt is not this order's.
        let _ = self.http.take_retry_after();
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = site
            .hosts
            .iter()
            .map(|h| Identifier::Dns(h.clone()))
            .collect();
        let mut new_order = NewOrder::new(&identifiers);
        let replaced = match self.certs.installed(&site.name) {
            Some((_, leaf)) if self.renewal_info(&leaf).await.is_some() => {
                CertificateIdentifier::try_from(&leaf)
                    .ok()
                    .map(|id| id.into_owned())
            }
            _ => None,
        };
        if let Some(id) = replaced {
            new_order = new_order.replaces(id);
        }
        let mut order = account
            .new_order(&new_order)
            .await
            .map_err(|e| self.fail("new order", e))?;
        let mut tokens = Vec::new();
        let mut alpn_names = Vec::new();
        let answered = self.answer(&mut order, &mut tokens, &mut alpn_names).await;
        for t in &tokens {
            self.challenges.withdraw_http01(t).await;
        }
        for n in &alpn_names {
            self.certs.clear_alpn_challenge(n);
        }
        let (chain, key) = answered?;
        let (stored, ck) = StoredCert::from_pem(chain, key)
            .map_err(|e| Failure::new(format!("the CA's certificate: {e}")))?;
        let info = stored.info.clone();
        let state = self.state.clone();
        let name = site.name.clone();
        tokio::task::spawn_blocking(move || state.save_cert(&name, &stored))
            .await
            .map_err(|e| Failure::new(format!("saving the certificate: {e}")))?
            .map_err(|e| {
                Failure::new(format!(
                    "saving the certificate in {}: {e}",
                    self.state.path().display()
                ))
            })?;
        self.certs.install(&site.name, ck, info.clone());
        Ok(info)
    }

    /// Answers every pending authorization of `order` and fetches the certificate. Records
    /// what it published in `tokens` and `alpn_names` so the caller withdraws it.
    async fn answer(
        &self,
        order: &mut Order,
        tokens: &mut Vec<String>,
        alpn_names: &mut Vec<String>,
    ) -> Result<(String, String), Failure> {
        let kind = self.settings.challenge;
        let wanted = match kind {
            ChallengeKind::Http01 => ChallengeType::Http01,
            ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(|e| self.fail("authorization", e))?;
                let name = authz.identifier().to_string();
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => {
                        return Err(Failure::new(format!(
                            "authorization for {name} is {other:?}"
                        )))
                    }
                }
                let mut challenge = authz.challenge(wanted.clone()).ok_or_else(|| {
                    Failure::new(format!(
                        "the CA offers no {} challenge for {name}",
                        kind.as_str()
                    ))
                })?;
                let key_authorization = challenge.key_authorization();
                match kind {
                    ChallengeKind::Http01 => {
                        self.challenges
                            .publish_http01(&challenge.token, key_authorization.as_str())
                            .await;
                        tokens.push(challenge.token.clone());
                    }
                    ChallengeKind::TlsAlpn01 => {
                        let ck = alpn_certificate(&name, key_authorization.digest().as_ref())
                            .map_err(Failure::new)?;
                        self.certs.set_alpn_challenge(&name, Arc::new(ck));
                        alpn_names.push(name.clone());
                    }
                }
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| self.fail(&format!("{} for {name}", kind.as_str()), e))?;
            }
        }
        let status = order
            .poll_ready(&RetryPolicy::new().timeout(VALIDATION_TIMEOUT))
            .await
            .map_err(|e| self.fail("validation", e))?;
        if status != OrderStatus::Ready {
            return Err(Failure::new(self.why_invalid(order).await));
        }
        let key = order
            .finalize()
            .await
            .map_err(|e| self.fail("finalizing", e))?;
        let chain = order
            .poll_certificate(&RetryPolicy::new().timeout(ISSUANCE_TIMEOUT))
            .await
            .map_err(|e| self.fail("downloading the certificate", e))?;
        Ok((chain, key))
    }

    /// The CA's reason an order became invalid: the failed challenges' errors.
    async fn why_invalid(&self, order: &mut Order) -> String {
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let name = authz.identifier().to_string();
            if let Ok(state) = authz.refresh().await {
                for c in &state.challenges {
                    if let Some(p) = &c.error {
                        reasons.push(format!("{name}: {p}"));
                    }
                }
            }
        }
        if reasons.is_empty() {
            "the order became invalid".to_string()
        } else {
            format!("validation failed: {}", reasons.join("; "))
        }
    }
}

/// The TLS-ALPN-01 certificate for `name` (RFC 8737 §3): self-signed, the name as its only
/// SAN, the SHA-256 of the key authorization in the critical acmeIdentifier extension.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<CertifiedKey, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let first = Duration::from_secs(60);
        let b1 = backoff(first, 1);
        assert!(b1 >= first && b1 < first.mul_f64(1.1));
        let b3 = backoff(first, 3);
        assert!(b3 >= first * 4 && b3 < (first * 4).mul_f64(1.1));
        let b30 = backoff(first, 30);
        assert!(b30 >= MAX_RETRY && b30 < MAX_RETRY.mul_f64(1.1));
    }

    #[test]
    fn alpn_certificate_carries_the_name() {
        let ck = alpn_certificate("galion.test", &[7u8; 32]).expect("cert");
        let info = CertInfo::from_der(ck.end_entity_cert().expect("leaf")).expect("parse");
        assert_eq!(info.names, ["galion.test"]);
    }
}
