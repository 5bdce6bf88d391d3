//! The evgen command line; all logic lives in the library.

fn main() {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = evgen::cli::run(std::env::args_os().collect(), &mut out, &mut err);
    std::process::exit(code);
}
