//! Fuzzes the fleet spec parser and validator: any input must give a fleet or diagnostics,
//! never a panic, and rendering the diagnostics must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let sources = [("fuzz.yaml".to_string(), text.to_string())];
    for env in [None, Some("production")] {
        if let Err(d) = phoenix_spec::parse_sources(&sources, env) {
            let _ = d.render();
        }
    }
});
