// The cacheability decision over origin `Cache-Control`, `Expires`, `Vary`, `Set-Cookie`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proxy_core::fuzzing::cache_control(data));
