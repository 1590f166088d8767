//! The `acme_path` target: ACME challenge paths under the webroot.

use crate::acme;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// A webroot with challenge files, a symlink inside it, a symlink out of it, a directory and
/// an oversized file, and the runtime [`acme::read_challenge`] runs on.
#[derive(Debug)]
pub struct AcmeFixture {
    webroot: PathBuf,
    /// Token → the bytes that must be served for it; any other token gets nothing.
    served: HashMap<&'static str, &'static [u8]>,
    runtime: tokio::runtime::Runtime,
}

impl AcmeFixture {
    /// Creates the webroot under `dir` (an empty directory the caller owns) and a
    /// secret file beside it, outside the webroot.
    pub fn new(dir: &Path) -> std::io::Result<AcmeFixture> {
        let webroot = dir.join("webroot");
        let challenges = webroot.join(".well-known").join("acme-challenge");
        std::fs::create_dir_all(&challenges)?;
        std::fs::write(dir.join("secret"), b"outside the webroot")?;
        std::fs::write(webroot.join("not-a-challenge"), b"webroot file")?;
        std::fs::write(
            challenges.join("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"),
            b"c1",
        )?;
        std::fs::write(challenges.join("tok_2-x"), b"c2")?;
        std::fs::write(challenges.join("big"), vec![b'x'; 20_000])?;
        std::fs::create_dir_all(challenges.join("subdir"))?;
        std::fs::write(challenges.join("subdir").join("inner"), b"nested")?;
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("secret"), challenges.join("escape"))?;
            std::os::unix::fs::symlink(challenges.join("tok_2-x"), challenges.join("alias"))?;
        }
        let mut served: HashMap<&'static str, &'static [u8]> = HashMap::new();
        served.insert("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", b"c1");
        served.insert("tok_2-x", b"c2");
        #[cfg(unix)]
        served.insert("alias", b"c2");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(AcmeFixture {
            webroot,
            served,
            runtime,
        })
    }

    /// The webroot directory.
    pub fn webroot(&self) -> &Path {
        &self.webroot
    }
}

/// The ACME webroot path check: `data` is a request target (`/.well-known/acme-challenge/…`);
/// it is tried as the raw path and as the path `http::Uri` parses from it, as the service
/// sees it.
///
/// Invariants: a token that [`acme::valid_token`] accepts is one plain path component, so it
/// cannot leave the challenge directory; [`acme::read_challenge`] serves exactly the fixture's
/// challenge files (including the symlink inside the webroot) and nothing else: not the
/// symlink out of it, the directory, the oversized file, or anything by another name.
pub fn acme_path(fixture: &AcmeFixture, data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let uri_path = raw.parse::<http::Uri>().ok();
    let candidates = std::iter::once(raw).chain(uri_path.as_ref().map(http::Uri::path));
    for path in candidates {
        let Some(token) = path.strip_prefix(acme::CHALLENGE_PREFIX) else {
            continue;
        };
        let valid = acme::valid_token(token);
        if valid {
            let mut components = Path::new(token).components();
            assert!(
                matches!(components.next(), Some(Component::Normal(c)) if c == token),
                "token {token:?} is not one path component"
            );
            assert!(
                components.next().is_none(),
                "token {token:?} has several components"
            );
        }
        let got = fixture
            .runtime
            .block_on(acme::read_challenge(&fixture.webroot, token));
        match (got, fixture.served.get(token)) {
            (None, None) => {}
            (Some(body), Some(expected)) => {
                assert!(valid);
                assert_eq!(&body[..], *expected, "token {token:?}");
            }
            (got, expected) => panic!("token {token:?}: served {got:?}, expected {expected:?}"),
        }
    }
}
