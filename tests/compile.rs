//! Every fixture's generated workspace builds clean under
//! `cargo clippy --all-targets -- -D warnings` and `cargo fmt --check`
//! (one shared target dir keeps this affordable), and a new consumed event
//! surfaces as a compile error naming the handler to write.

mod common;

use common::{cargo, cargo_result, evgen};

#[test]
fn fixtures_compile_clippy_and_fmt_clean() {
    for (case, dir) in common::fixtures() {
        let ws = common::scratch(&format!("compile-{case}"));
        let cat = dir.join("evgen.yaml");
        let (code, out, err) = evgen(&[
            "new",
            ws.to_str().expect("utf-8"),
            "--catalog",
            cat.to_str().expect("utf-8"),
        ]);
        assert_eq!(code, 0, "{case}: {out}{err}");
        let (ok, fmt) = cargo_result(&ws, &["fmt", "--check"]);
        assert!(ok, "{case}: generated code is not rustfmt-clean:\n{fmt}");
        cargo(&ws, &["clippy", "--all-targets", "--", "-D", "warnings"]);
    }
}

#[test]
fn a_new_consumed_event_names_the_missing_handler() {
    let ws = common::scratch("compile-add-event");
    let dir = ws.to_str().expect("utf-8");
    let (code, out, err) = evgen(&["new", dir]);
    assert_eq!(code, 0, "{out}{err}");
    cargo(&ws, &["check"]);
    let (code, out, err) = evgen(&[
        "add-event",
        "refund.issued",
        "--field",
        "order_id:uuid",
        "--field",
        "cents:integer",
        "--consume",
        "--dir",
        dir,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (ok, build) = cargo_result(&ws, &["check"]);
    assert!(!ok, "the build should fail until the handler exists");
    assert!(
        build.contains("not all trait items implemented, missing: `refund_issued`"),
        "{build}"
    );
    // The method evgen printed is exactly what makes it build again.
    let method = &out[out
        .find("    async fn refund_issued(")
        .expect("printed method")..];
    let method = &method[..method.find("\n    }\n").expect("method end") + 6];
    let path = ws.join("service/src/handlers.rs");
    let handlers = std::fs::read_to_string(&path).expect("read");
    let at = handlers.rfind("}\n").expect("impl end");
    let patched = format!("{}\n{method}{}", &handlers[..at], &handlers[at..]);
    std::fs::write(&path, patched).expect("write");
    cargo(&ws, &["clippy", "--all-targets", "--", "-D", "warnings"]);
}
