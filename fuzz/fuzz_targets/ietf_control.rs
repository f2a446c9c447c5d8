//! Draft-14 control stream: any control message, back to back.
//! The body lives in `ietf::fuzzing` so a stable `#[test]` replays it too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| qumo::ietf::fuzzing::control(data));
