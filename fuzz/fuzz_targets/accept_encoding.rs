// `Accept-Encoding` negotiation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proxy_core::fuzzing::accept_encoding(data));
