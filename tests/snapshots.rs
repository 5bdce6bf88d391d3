//! Golden output: every generated file of every fixture catalog, and the
//! error text of every error fixture (insta snapshots in tests/snapshots/).

mod common;

use std::path::Path;

fn generate(dir: &Path) -> evgen::Generated {
    match evgen::generate(dir) {
        Ok(g) => g,
        Err(d) => panic!("{}", evgen::render_diagnostics(dir, &d)),
    }
}

#[test]
fn generated_files_match_snapshots() {
    for (case, dir) in common::fixtures() {
        let g = generate(&dir);
        for f in &g.files {
            let name = format!("{case}__{}", f.path.replace('/', "__"));
            insta::assert_snapshot!(name, &f.content);
        }
    }
}

#[test]
fn errors_match_snapshots() {
    let base = common::root().join("tests/errors");
    let mut cases: Vec<_> = std::fs::read_dir(&base)
        .expect("tests/errors")
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    for dir in cases {
        let case = dir
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let d = match evgen::generate(&dir) {
            Ok(_) => panic!("{case} should fail"),
            Err(d) => d,
        };
        let text = evgen::render_diagnostics(&dir, &d);
        // OS error texts differ between systems; keep the snapshot portable.
        let text = text.replace("No such file or directory (os error 2)", "not found");
        insta::assert_snapshot!(format!("error__{case}"), text);
    }
}

#[test]
fn output_is_deterministic_and_location_independent() {
    for (case, dir) in common::fixtures() {
        let a = generate(&dir);
        let copy = common::scratch(&format!("determinism-{case}"));
        copy_dir(&dir, &copy);
        let b = generate(&copy);
        assert_eq!(a.files.len(), b.files.len());
        for (x, y) in a.files.iter().zip(&b.files) {
            assert_eq!(x.path, y.path);
            assert_eq!(
                x.content, y.content,
                "{case}: {} differs between two runs",
                x.path
            );
            assert!(
                !x.content.contains(&*dir.to_string_lossy()),
                "{case}: {} holds an absolute path",
                x.path
            );
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read").flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).expect("copy");
        }
    }
}
