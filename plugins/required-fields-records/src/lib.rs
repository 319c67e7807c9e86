//! The Rust record-mode validator that `export-service plugin new --lang rust` scaffolds, built
//! from the very template the CLI writes (`src/scaffold/rust_lib.rs.txt`), so CI builds it and
//! the benchmark measures it beside the Python and JavaScript ones.

include!("../../../src/scaffold/rust_lib.rs.txt");
