//! Draft-22 wire: request-stream messages back to back, a subgroup stream or a fetch stream.
//! The body lives in `ietf::fuzzing` so a stable `#[test]` replays it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qumo::ietf::fuzzing::draft22(data));
