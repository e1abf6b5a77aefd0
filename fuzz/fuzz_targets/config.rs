//! The config loader on TOML text, as `citygate check-config` runs it but without the
//! process environment: defaults, the built-in catalog, then the text; then validation.
#![no_main]

use std::collections::HashMap;

use citygate::config::{load_with_env, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The loader reads files as UTF-8; a file that is not is refused before TOML parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source::Text {
        name: "fuzz.toml".into(),
        toml: text.into(),
    };
    match load_with_env(&[source], Some(HashMap::new())) {
        Ok(config) => {
            // A config that loads is one the gateway would start with: every sensor it
            // declares has an id.
            for id in config.sensors.keys() {
                assert!(!id.is_empty(), "a sensor with an empty id was accepted");
            }
        }
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error with no problem in it");
            for p in &e.problems {
                assert!(
                    !p.message.is_empty(),
                    "a problem with no message at {:?}",
                    p.path
                );
            }
        }
    }
});
