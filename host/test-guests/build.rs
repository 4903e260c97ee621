//! Builds every guest component from source before tests compile, and
//! records where each one is.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| manifest.join("../.."));
    for dir in ["guests", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let out = wafer_guests_build::components_dir(&root);
    let rust = match wafer_guests_build::build_rust(&root, &out) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut code = String::new();
    let _ = writeln!(code, "/// Directory holding every built component.");
    let _ = writeln!(
        code,
        "pub const COMPONENTS_DIR: &str = {:?};",
        out.display().to_string()
    );
    for (name, path) in wafer_guests_build::RUST_GUESTS.iter().zip(&rust) {
        let _ = writeln!(code, "/// The `{name}` component.");
        let _ = writeln!(
            code,
            "pub const {}: &str = {:?};",
            name.replace('-', "_").to_uppercase(),
            path.display().to_string()
        );
    }
    // Python guests need componentize-py; without it the tests that use them
    // fail with this message rather than being skipped.
    let python = wafer_guests_build::build_python(&root, &out);
    for (i, (dir, _)) in wafer_guests_build::PYTHON_GUESTS.iter().enumerate() {
        let value = match &python {
            Ok(paths) => format!("Ok({:?})", paths[i].display().to_string()),
            Err(e) => format!("Err({e:?})"),
        };
        let _ = writeln!(
            code,
            "/// The Python `{dir}` component, or why it could not be built."
        );
        let _ = writeln!(
            code,
            "pub const PY_{}: Result<&str, &str> = {value};",
            dir.replace('-', "_").to_uppercase()
        );
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("components.rs");
    if let Err(e) = std::fs::write(&dest, code) {
        panic!("cannot write {}: {e}", dest.display());
    }
}
