//! evgen: generate typed, reliable event-driven Rust services from an
//! event catalog (`evgen.yaml` plus JSON Schemas).
//!
//! [`generate`] is the pipeline — load the catalog, check it, lower its
//! schemas, render the files — and returns them in memory; [`emit`] writes
//! or diffs them.
#![deny(missing_docs)]

pub mod catalog;
pub mod cli;
pub mod diag;
pub mod edit;
pub mod emit;
pub mod model;
pub mod naming;
mod par;
pub mod render;
pub mod schema;
pub mod service;

use std::path::Path;

/// The result of a successful generation.
#[derive(Debug)]
pub struct Generated {
    /// The resolved service model.
    pub service: model::Service,
    /// Every file, generated ones sealed.
    pub files: Vec<render::File>,
    /// Lowering statistics.
    pub stats: service::Stats,
}

/// Run the pipeline on catalog text; `read` reads files relative to the
/// catalog's folder.
pub fn generate_from(
    text: &str,
    read: &schema::ReadFile<'_>,
) -> Result<Generated, diag::Diagnostics> {
    let (service, stats) = service::load(text, read)?;
    let mut files = render::files(&service);
    let sealed = par::map(&files, |f| {
        (f.owner == render::Owner::Generated).then(|| emit::seal(&f.content))
    });
    for (f, sealed) in files.iter_mut().zip(sealed) {
        if let Some(content) = sealed {
            f.content = content;
        }
    }
    Ok(Generated {
        service,
        files,
        stats,
    })
}

/// Read a file inside `dir` given a catalog-relative path.
pub fn reader(dir: &Path) -> impl Fn(&str) -> std::io::Result<String> + '_ {
    move |rel: &str| std::fs::read_to_string(dir.join(rel))
}

/// Run the pipeline on the catalog in `dir`.
pub fn generate(dir: &Path) -> Result<Generated, diag::Diagnostics> {
    let path = dir.join(catalog::CATALOG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        diag::Diagnostics(vec![
            diag::Diagnostic::at(path.display().to_string(), None, 0, format!("cannot read the catalog: {e}"))
                .help("run evgen in the folder that holds evgen.yaml, pass `--dir`, or create one with `evgen new`"),
        ])
    })?;
    generate_from(&text, &reader(dir))
}

/// Render diagnostics with snippets from the files in `dir`.
pub fn render_diagnostics(dir: &Path, d: &diag::Diagnostics) -> String {
    d.render(&|f| std::fs::read_to_string(dir.join(f)).ok())
}
