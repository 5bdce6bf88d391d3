//! The evgen command line; all logic lives in the library.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let code = evgen::cli::run(std::env::args_os().collect(), &mut out, &mut err);
    std::process::exit(code);
}
