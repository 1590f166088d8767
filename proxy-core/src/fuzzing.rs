//! Fuzzing entry points: one function per parser of outside input, each asserting the
//! parser's invariants (beyond "does not panic").
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` call these functions, and the stable
//! regression test `proxy-core/tests/fuzz_corpus.rs` replays every committed seed and every
//! input a fuzzer once crashed on through the same functions, so CI checks the same invariants
//! without a nightly toolchain. Each function takes raw fuzzer bytes, never fails, and panics
//! only when an invariant is broken (that panic is the finding).
//!
//! Not part of the library's API: compiled only with the `fuzzing` feature (off by default;
//! `fuzz/Cargo.toml` turns it on) and in proxy-core's own unit tests, which borrow
//! [`cache_control_zone`]; hidden from the docs, and subject to change. One file per target,
//! named like the target in `fuzz/fuzz_targets/`.

mod accept_encoding;
mod acme_path;
mod cache_control;
mod client_ip;
mod config;
mod disk_entry;
mod routing;

pub use accept_encoding::accept_encoding;
pub use acme_path::{acme_path, AcmeFixture};
pub use cache_control::{cache_control, cache_control_zone};
pub use client_ip::client_ip;
pub use config::config;
pub use disk_entry::{disk_entry, entry_path, stored_key};
pub use routing::{routing, routing_fixture};

/// The names of the fuzz targets, which are also the corpus directory names.
pub const TARGETS: &[&str] = &[
    "config",
    "routing",
    "client_ip",
    "accept_encoding",
    "cache_control",
    "disk_entry",
    "acme_path",
];

/// Lines of `data` split on `\n` (a trailing `\r` is kept: it is part of the input).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}
