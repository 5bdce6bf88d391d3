//! Schema lowering and rendering on arbitrary JSON: a document either
//! lowers to types, whose `types.rs` is valid Rust, or is refused with
//! diagnostics. Never a panic, never a hang.
#![no_main]

use evgen::schema::{Options, lower_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options; the rest is the schema, which is
    // also what every other file it references holds.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if serde_json::from_str::<serde_json::Value>(text).is_err() {
        return;
    }
    let read = |path: &str| -> std::io::Result<String> {
        if path.ends_with(".json") {
            Ok(text.to_string())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found",
            ))
        }
    };
    let options = Options {
        apply_defaults: flags & 1 != 0,
        typed_formats: flags & 2 != 0,
        big_integers: flags & 4 != 0,
        remotes: if flags & 8 != 0 {
            vec![("http://localhost:1234/".into(), "remotes/".into())]
        } else {
            vec![]
        },
    };
    if let Ok(lowered) = lower_document("schemas/fuzz.json", "Fuzz", &read, options) {
        let rust = evgen::render::types_rs(&lowered.types);
        if let Err(e) = syn::parse_file(&rust) {
            panic!("types.rs does not parse: {e}\n{rust}");
        }
    }
});
