//! Fuzz target: arbitrary bytes as a Data.fs, read in every way.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir();
    let path = dir.join(format!("neofs-fuzz-{}.fs", std::process::id()));
    // Most inputs should start like a FileStorage to get past the magic.
    let mut bytes = b"FS30".to_vec();
    bytes.extend_from_slice(data);
    neo_filestorage::fuzz::read_everything(&bytes, &path);
});
