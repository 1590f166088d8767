// Client IP resolution: trusted proxies, `CF-Connecting-IP`, `X-Forwarded-For`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proxy_core::fuzzing::client_ip(data));
