// Host and path matching: `RouteTable::decide`, `strip_port`, `path_is_clean`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| proxy_core::fuzzing::routing(data));
