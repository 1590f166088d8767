// The ACME webroot path check: challenge tokens from request paths, against a real webroot
// with symlinks in and out of it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use proxy_core::fuzzing::{acme_path, AcmeFixture};
use std::sync::OnceLock;

fn fixture() -> &'static AcmeFixture {
    static FIXTURE: OnceLock<AcmeFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Kept for the whole run (statics are not dropped); a few bytes under the temp dir.
        let dir = tempfile::Builder::new()
            .prefix("galion-edge-fuzz-acme-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"))
            .keep();
        AcmeFixture::new(&dir).unwrap_or_else(|e| panic!("acme fixture: {e}"))
    })
}

fuzz_target!(|data: &[u8]| acme_path(fixture(), data));
