//! The lite-05+ SETUP message.
//! The body lives in `lite::fuzzing` so a stable `#[test]` replays it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qumo::lite::fuzzing::setup(data));
