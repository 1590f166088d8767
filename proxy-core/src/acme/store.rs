//! The state directory: the ACME account and the certificates, kept across restarts.
//!
//! ```text
//! STATE_DIR/                        0700
//!   accounts/DIRECTORY.json         0600  the account key and URL, one per ACME directory
//!   certs/SITE/fullchain.pem        0600  the chain, leaf first
//!   certs/SITE/privkey.pem          0600  the certificate's key (PKCS#8)
//! ```
//!
//! Every file is written to a temporary name in the same directory, synced and renamed, so a
//! crash leaves the old file or the new one, never half of one. The key and the account are
//! never logged: [`StoredCert`]'s `Debug` leaves the key out.

use crate::tls::{certified_key_from_pem, CertInfo};
use instant_acme::AccountCredentials;
use rustls::sign::CertifiedKey;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A certificate and its key, as kept in the state directory.
#[derive(Clone)]
pub struct StoredCert {
    /// The chain, PEM, leaf first.
    pub chain_pem: String,
    /// The private key, PEM.
    pub key_pem: String,
    /// What the leaf says: names, issuer, validity.
    pub info: CertInfo,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCert")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl StoredCert {
    /// Parses and checks a chain and key (they must belong together), for serving.
    pub fn from_pem(
        chain_pem: String,
        key_pem: String,
    ) -> Result<(StoredCert, CertifiedKey), String> {
        let (ck, info) = certified_key_from_pem(chain_pem.as_bytes(), key_pem.as_bytes())?;
        Ok((
            StoredCert {
                chain_pem,
                key_pem,
                info,
            },
            ck,
        ))
    }
}

/// The state directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Opens `root`, creating it (and its parents) with mode 0700 if missing. An existing
    /// directory gets mode 0700 too.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        fs::create_dir_all(root)?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(StateDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Checks that the directory can be written: creates, writes and removes a file. For
    /// `galion-edge check`.
    pub fn check_writable(&self) -> io::Result<()> {
        let probe = self.root.join(".write-check");
        write_private(&probe, b"ok")?;
        fs::remove_file(&probe)
    }

    fn account_path(&self, directory: &str) -> PathBuf {
        self.root
            .join("accounts")
            .join(format!("{}.json", slug(directory)))
    }

    fn cert_dir(&self, site: &str) -> PathBuf {
        self.root.join("certs").join(slug(site))
    }

    /// The account for `directory`, if one was saved. A file that cannot be read or parsed is
    /// an error, not a reason to register a new account silently.
    pub fn load_account(&self, directory: &str) -> io::Result<Option<AccountCredentials>> {
        let path = self.account_path(directory);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: not an account file ({e})", path.display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves the account for `directory` (0600).
    pub fn save_account(&self, directory: &str, account: &AccountCredentials) -> io::Result<()> {
        let bytes = serde_json::to_vec(account).map_err(io::Error::other)?;
        write_private(&self.account_path(directory), &bytes)
    }

    /// The certificate saved for `site`: `Ok(None)` if there is none, `Err` with the reason if
    /// the files are there but unusable (the caller orders a new one).
    pub fn load_cert(&self, site: &str) -> Result<Option<(StoredCert, CertifiedKey)>, String> {
        let dir = self.cert_dir(site);
        let read = |name: &str| fs::read_to_string(dir.join(name));
        match (read("fullchain.pem"), read("privkey.pem")) {
            (Ok(chain), Ok(key)) => StoredCert::from_pem(chain, key)
                .map(Some)
                .map_err(|e| format!("{}: {e}", dir.display())),
            (Err(e), _) | (_, Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            (Err(e), _) | (_, Err(e)) => Err(format!("{}: {e}", dir.display())),
        }
    }

    /// Saves `site`'s certificate: the key first, then the chain, each replaced whole.
    pub fn save_cert(&self, site: &str, cert: &StoredCert) -> io::Result<()> {
        let dir = self.cert_dir(site);
        write_private(&dir.join("privkey.pem"), cert.key_pem.as_bytes())?;
        write_private(&dir.join("fullchain.pem"), cert.chain_pem.as_bytes())
    }
}

/// A file name for a URL or a site name: ASCII letters, digits, `.`, `-` and `_` kept, anything
/// else `_`.
fn slug(s: &str) -> String {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

/// Writes `bytes` to `path` with mode 0600 (directories 0700): a temporary file, synced, then
/// renamed over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("a state file needs a directory"))?;
    if !dir.is_dir() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // An existing temporary file keeps its old mode through `open`: set it.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_single_path_components() {
        assert_eq!(
            slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(slug("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
        assert_eq!(slug("../etc"), "_etc");
        assert_eq!(slug("galion.app"), "galion.app");
    }

    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&dir.path().join("acme")).expect("open");
        let file = state.root.join("certs").join("s").join("privkey.pem");
        write_private(&file, b"secret").expect("write");
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(file.parent().expect("dir")), 0o700);
        assert_eq!(mode(state.path()), 0o700);
        state.check_writable().expect("writable");
    }
}
