//! Builds the repository's guest components: the Rust guests in `guests/`
//! (one cargo build for `wasm32-wasip2`) and the Python guests in
//! `guests/python/` (componentize-py). Used by `cargo xtask guests` and by the
//! build script of `wafer-test-guests`, so tests always run against
//! components built from the current sources, never checked-in binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target the Rust guests are built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The Rust guest crates, by package name.
pub const RUST_GUESTS: &[&str] = &[
    "interaction-json",
    "interaction-protobuf",
    "interaction-avro",
    "filter-example",
    "faulty",
    "bench-noop",
    "bench-keep-all",
    "sessions",
    "sessions-v2",
    "probe",
    "view-json",
    "engagement-json",
    "training-samples",
];

/// The Python guests: (directory under `guests/python`, world).
pub const PYTHON_GUESTS: &[(&str, &str)] = &[("filter-example", "filter")];

/// Environment variables of an enclosing cargo (when called from a build
/// script) that must not leak into the guests' build.
const CARGO_LEAKS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
    "CLIPPY_ARGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "RUSTC",
    "RUSTDOC",
];

/// The checkout being built, run or tested: the nearest ancestor of the
/// running package's directory that holds `rust-toolchain.toml`. Cargo sets
/// `CARGO_MANIFEST_DIR` when it runs a binary, test or bench, and that is
/// preferred to `compiled_in` (the caller's `env!("CARGO_MANIFEST_DIR")`):
/// a build cache shared between checkouts can hold the caller compiled in
/// another checkout, whose path would then be baked in.
pub fn checkout(compiled_in: &str) -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(compiled_in));
    start
        .ancestors()
        .find(|d| d.join("rust-toolchain.toml").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// The directory components are copied to: `<root>/target/components`.
pub fn components_dir(root: &Path) -> PathBuf {
    root.join("target").join("components")
}

/// Where the guests' cargo builds: `$CARGO_TARGET_DIR/guests` when set
/// (a shared cache), else `<root>/target/guests`.
pub fn guest_target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("guests"),
        _ => root.join("target").join("guests"),
    }
}

/// A command for `program` without the enclosing cargo's [`CARGO_LEAKS`].
fn without_cargo_leaks(program: &str) -> Command {
    let mut cmd = Command::new(program);
    for v in CARGO_LEAKS {
        cmd.env_remove(v);
    }
    cmd
}

/// Makes sure the toolchain of `root` can build for [`WASM_TARGET`],
/// adding the target with rustup when its standard library is missing.
///
/// `rust-toolchain.toml` lists the target, but rustup adds a toolchain
/// file's targets only when it installs the toolchain itself: on a machine
/// whose `stable` was installed before the checkout (rustup 1.29), the
/// guests' build failed with "can't find crate for `core`".
pub fn ensure_wasm_target(root: &Path) -> Result<(), String> {
    let sysroot = without_cargo_leaks("rustc")
        .current_dir(root)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run rustc to find its sysroot: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if !sysroot.is_empty()
        && Path::new(&sysroot)
            .join("lib")
            .join("rustlib")
            .join(WASM_TARGET)
            .join("lib")
            .is_dir()
    {
        return Ok(());
    }
    eprintln!("the guests need the {WASM_TARGET} target: adding it with rustup");
    let status = Command::new("rustup")
        .current_dir(root)
        .args(["target", "add", WASM_TARGET])
        .status()
        .map_err(|e| {
            format!("the guests need the {WASM_TARGET} target, and rustup could not be run to add it: {e}")
        })?;
    if !status.success() {
        return Err(format!(
            "the guests need the {WASM_TARGET} target: `rustup target add {WASM_TARGET}` failed ({status})"
        ));
    }
    Ok(())
}

/// Builds every Rust guest in release mode and copies each component to
/// `out/<name>.wasm`. Returns the paths, in [`RUST_GUESTS`] order.
pub fn build_rust(root: &Path, out: &Path) -> Result<Vec<PathBuf>, String> {
    ensure_wasm_target(root)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = guest_target_dir(root);
    let mut cmd = without_cargo_leaks(&cargo);
    cmd.current_dir(root.join("guests"))
        .args(["build", "--release", "--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir);
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build the guests: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the Rust guests failed ({status}); see the output above"
        ));
    }
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut paths = Vec::new();
    for name in RUST_GUESTS {
        let built = target_dir
            .join(WASM_TARGET)
            .join("release")
            .join(format!("{}.wasm", name.replace('-', "_")));
        let dest = out.join(format!("{name}.wasm"));
        copy_if_changed(&built, &dest)?;
        paths.push(dest);
    }
    Ok(paths)
}

/// Finds componentize-py: on the PATH, or as the Python module.
pub fn componentize_py() -> Option<Command> {
    let probe = |mut c: Command| -> Option<Command> {
        let ok = c
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        ok.then_some(c)
    };
    if probe(Command::new("componentize-py")).is_some() {
        return Some(Command::new("componentize-py"));
    }
    let mut m = Command::new("python3");
    m.args(["-m", "componentize_py"]);
    if probe(m).is_some() {
        let mut m = Command::new("python3");
        m.args(["-m", "componentize_py"]);
        return Some(m);
    }
    None
}

/// Builds the Python guests with componentize-py into `out/<dir>-py.wasm`,
/// skipping any whose component is newer than its sources and the WIT.
pub fn build_python(root: &Path, out: &Path) -> Result<Vec<PathBuf>, String> {
    let wit = root.join("wit");
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let mut paths = Vec::new();
    for (dir, world) in PYTHON_GUESTS {
        let src = root.join("guests").join("python").join(dir);
        let dest = out.join(format!("{dir}-py.wasm"));
        if !newer_than_sources(&dest, &[&src, &wit]) {
            let Some(mut cmd) = componentize_py() else {
                return Err("componentize-py is not installed (run `cargo xtask setup`, or `pip install componentize-py`)".into());
            };
            let status = cmd
                .arg("-d")
                .arg(&wit)
                .args(["-w", world, "componentize", "app", "-p"])
                .arg(&src)
                .arg("-o")
                .arg(&dest)
                .status()
                .map_err(|e| format!("cannot run componentize-py: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "componentize-py failed for guests/python/{dir} ({status})"
                ));
            }
        }
        paths.push(dest);
    }
    Ok(paths)
}

fn newest(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .ok()?
            .flatten()
            .filter_map(|e| newest(&e.path()))
            .max()
    } else {
        meta.modified().ok()
    }
}

fn newer_than_sources(dest: &Path, sources: &[&Path]) -> bool {
    let Some(built) = std::fs::metadata(dest).and_then(|m| m.modified()).ok() else {
        return false;
    };
    sources.iter().all(|s| newest(s).is_some_and(|t| t <= built))
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let new = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        std::fs::write(to, &new).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    Ok(())
}
