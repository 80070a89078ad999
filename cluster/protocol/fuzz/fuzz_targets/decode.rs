//! Fuzz target: the stream decoder must never panic on any input, whatever the size of the
//! reads, and every packet it accepts must re-encode to bytes that decode to the same packet.
//! The first input byte chooses the read size, so that splits are fuzzed too.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&split, stream)) = input.split_first() else {
        return;
    };
    neo_protocol::codec::fuzz_decode(stream, split as usize % 64 + 1);
});
