//! Certificates by ACME (RFC 8555), and the port-80 challenge paths.
//!
//! Two ways to get a site's certificate through port 80 and 443:
//!
//! - **Built in** (`[acme]` with `directory`, and `tls = { acme = true }` on a site): the
//!   [`AcmeService`] orders a certificate for each such site's `hosts` from the directory
//!   (Let's Encrypt, or any RFC 8555 CA) with [instant-acme](https://docs.rs/instant-acme),
//!   answers the CA's HTTP-01 challenge on the port-80 listener or its TLS-ALPN-01 challenge
//!   (RFC 8737) on the https listener, keeps the account and certificates in a state directory
//!   ([`StateDir`], files 0600), installs each new certificate in the
//!   [`SniResolver`](crate::tls::SniResolver) without a restart, and renews it at two thirds of
//!   its lifetime or when the CA's renewal information (RFC 9773, ARI) says so.
//! - **certbot** (`[acme] webroot`): files under `WEBROOT/.well-known/acme-challenge/` are
//!   served as they are (`webroot`), and renewed files are picked up by the resolver's reload.
//!
//! The challenges in flight live in [`Challenges`], which the port-80 handler and the resolver
//! read. With `[redis]`, HTTP-01 answers are also written to Redis, so that whichever instance
//! the CA reaches answers, and one instance at a time orders (a lock with an expiry).

mod challenges;
mod client;
mod issuer;
mod settings;
mod shared;
mod store;
mod webroot;

pub use challenges::Challenges;
pub use issuer::{renewal_time, AcmeError, AcmeService, AcmeStats};
pub use settings::{
    AcmeSettings, AcmeSite, ChallengeKind, DEFAULT_FIRST_RETRY, DEFAULT_STATE_DIR,
    LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING, MAX_RETRY,
};
pub use store::{StateDir, StoredCert};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use webroot::valid_token;
pub(crate) use webroot::{read_challenge, CHALLENGE_PREFIX};
