// The on-disk cache entry decoder (footer, checksum, meta).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proxy_core::fuzzing::disk_entry(data));
