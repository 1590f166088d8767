//! HTTP-01 challenges served from a webroot, so `certbot --webroot` renewals keep working.
//!
//! Only `/.well-known/acme-challenge/TOKEN` is served, and only when `TOKEN` is a base64url
//! token (RFC 8555 §8.3: `A-Z a-z 0-9 - _`). A token can therefore never name another
//! directory, and the resolved file must still lie inside the webroot after symlinks.

use bytes::Bytes;
use std::path::Path;

/// The path prefix of challenge requests.
pub(crate) const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Largest challenge file served.
const MAX_CHALLENGE_BYTES: u64 = 16 * 1024;

/// Whether `token` is a syntactically valid ACME token.
pub(crate) fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Reads the challenge file for `token`, or `None` if the token is invalid, the file is
/// missing, too large, or resolves outside the webroot.
pub(crate) async fn read_challenge(webroot: &Path, token: &str) -> Option<Bytes> {
    if !valid_token(token) {
        return None;
    }
    let root = tokio::fs::canonicalize(webroot).await.ok()?;
    let file = root.join(".well-known").join("acme-challenge").join(token);
    let real = tokio::fs::canonicalize(&file).await.ok()?;
    if !real.starts_with(&root) {
        return None;
    }
    let meta = tokio::fs::metadata(&real).await.ok()?;
    if !meta.is_file() || meta.len() > MAX_CHALLENGE_BYTES {
        return None;
    }
    tokio::fs::read(&real).await.ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(valid_token("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"));
        assert!(!valid_token(".."));
        assert!(!valid_token("../../etc/passwd"));
        assert!(!valid_token("a/b"));
        assert!(!valid_token("%2e%2e"));
        assert!(!valid_token(""));
    }
}
