//! citygate JSON payloads: the codec contract, and every value finite (JSON cannot spell NaN
//! or infinity, and a number out of range is an error).
#![no_main]

use citygate::codec::Format;
use citygate_fuzz::{fuzz_codec, Values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    fuzz_codec(Format::Json, payload, Values::Finite);
});
