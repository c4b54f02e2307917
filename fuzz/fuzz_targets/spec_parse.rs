//! Fuzzes the fleet spec parser and validator: any input must give a fleet or diagnostics,
//! never a panic, and rendering the diagnostics must not panic either. The seeds include an
//! alias bomb and 10,000-deep nestings: with `-rss_limit_mb` and `-timeout` (libFuzzer's
//! defaults, 2 GB and 20 minutes, or lower) a parse that is not bounded is a crash.
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
