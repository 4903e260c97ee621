//! Repository tasks, run as `cargo xtask <task>`:
//!
//! - `setup`: installs what a fresh machine lacks (libclang for RocksDB's
//!   bindings, componentize-py for the Python guests), when run as root;
//! - `guests`: builds every guest component into `target/components`;
//! - `ci`: setup, formatting, clippy (host and guests), all tests;
//! - `example <name>`: builds everything in release mode and runs
//!   `examples/<name>/job.yaml`;
//! - `bench`: runs the criterion and end-to-end benchmarks.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

fn root() -> PathBuf {
    wafer_guests_build::checkout(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The target triple of this machine, as rustc names it.
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .context("cannot run rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("rustc -vV names no host")
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn have_libclang() -> bool {
    [
        "/usr/lib/llvm-14/lib/libclang.so",
        "/usr/lib/x86_64-linux-gnu/libclang-14.so.1",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || Command::new("sh")
            .args(["-c", "ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

/// Installs missing system packages and tools.
fn setup() -> anyhow::Result<()> {
    let mut apt = Vec::new();
    if !have_libclang() {
        apt.push("libclang-dev");
    }
    if !apt.is_empty() {
        if !is_root() {
            bail!(
                "missing system packages {apt:?}: install them with `sudo apt-get install -y {}`",
                apt.join(" ")
            );
        }
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&apt)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    wafer_guests_build::ensure_wasm_target(&root()).map_err(anyhow::Error::msg)?;
    if wafer_guests_build::componentize_py().is_none() {
        run(Command::new("python3").args(["-m", "pip", "install", "--quiet", "componentize-py==0.25.1"]))?;
    }
    Ok(())
}

/// The Kafka tests run against a real broker (tansu); installing it takes a
/// while, once per machine, so only the test run asks for it.
fn setup_kafka() -> anyhow::Result<()> {
    run(Command::new(root().join("scripts/kafka-broker")).arg("install"))
}

fn guests() -> anyhow::Result<()> {
    let root = root();
    let out = wafer_guests_build::components_dir(&root);
    wafer_guests_build::build_rust(&root, &out).map_err(anyhow::Error::msg)?;
    wafer_guests_build::build_python(&root, &out).map_err(anyhow::Error::msg)?;
    eprintln!("components in {}", out.display());
    Ok(())
}

fn ci() -> anyhow::Result<()> {
    setup()?;
    setup_kafka()?;
    let root = root();
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo()
        .current_dir(root.join("guests"))
        .args(["fmt", "--all", "--check"]))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    let mut guests_clippy = cargo();
    guests_clippy
        .current_dir(root.join("guests"))
        .args([
            "clippy",
            "--release",
            "--target",
            wafer_guests_build::WASM_TARGET,
            "--target-dir",
        ])
        .arg(wafer_guests_build::guest_target_dir(&root))
        .args(["--", "-D", "warnings"]);
    run(&mut guests_clippy)?;
    // Guests' own unit tests run natively (their logic is plain Rust):
    // among them the JSON records' readers checked against serde_json.
    let mut guests_tests = cargo();
    guests_tests
        .current_dir(root.join("guests"))
        .args(["test", "-p", "interaction-avro", "-p", "interaction"])
        .args(["-p", "training", "--target"])
        .arg(host_triple()?)
        .arg("--target-dir")
        .arg(wafer_guests_build::guest_target_dir(&root));
    run(&mut guests_tests)?;
    run(cargo().args(["test", "--workspace"]))?;
    Ok(())
}

fn example(name: &str) -> anyhow::Result<()> {
    setup()?;
    let root = root();
    let job = root.join("examples").join(name).join("job.yaml");
    if !job.exists() {
        bail!("no example `{name}` (expected {})", job.display());
    }
    guests()?;
    run(cargo().args(["build", "--release", "--bin", "wafer"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    run(Command::new(target.join("release").join("wafer"))
        .arg("run")
        .arg(&job))
}

fn bench() -> anyhow::Result<()> {
    setup()?;
    guests()?;
    run(cargo().args(["bench", "-p", "wafer-benches"]))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("guests") => guests(),
        Some("ci") => ci(),
        Some("example") => example(args.get(1).map(String::as_str).unwrap_or("user-features")),
        Some("bench") => bench(),
        _ => {
            eprintln!("usage: cargo xtask <setup | guests | ci | example [name] | bench>");
            std::process::exit(2);
        }
    }
}
