//! Draft-14 subgroup streams, fetch streams and object datagrams.
//! The body lives in `ietf::fuzzing` so a stable `#[test]` replays it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qumo::ietf::fuzzing::data(data));
