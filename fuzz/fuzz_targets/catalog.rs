//! The catalog parser and the whole pipeline on arbitrary text: any input
//! either generates files or returns diagnostics, and rendering those
//! diagnostics works too. Never a panic, never a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Every schema file the catalog names exists and holds this schema.
const SCHEMA: &str = include_str!("../../templates/example/schemas/order.placed.json");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let read = |path: &str| -> std::io::Result<String> {
        if path.ends_with(".json") {
            Ok(SCHEMA.to_string())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found",
            ))
        }
    };
    match evgen::generate_from(text, &read) {
        Ok(g) => {
            assert!(!g.files.is_empty());
        }
        Err(d) => {
            let _ = d.render(&|f| {
                if f == "evgen.yaml" {
                    Some(text.to_string())
                } else {
                    read(f).ok()
                }
            });
        }
    }
});
