//! SenML JSON packs: the codec contract. A base value plus a value may overflow to infinity
//! (the pipeline rejects it), but never becomes NaN.
#![no_main]

use citygate::codec::Format;
use citygate_fuzz::{fuzz_codec, Values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    fuzz_codec(Format::Senml, payload, Values::NotNan);
});
