// `Config::from_toml_str`: the config file. Relative paths resolve against `configs/`, so the
// committed example configs (and their local certificates) validate and the fuzzer reaches the
// success path too.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    proxy_core::fuzzing::config(data, &configs);
});
