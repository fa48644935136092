//! Builds every guest component for wasm32-wasip2 and writes their paths
//! into `$OUT_DIR/guests.rs`.
//!
//! Two guest workspaces are built: the example agents in `agents/` and the
//! test-only guests in `tests/guests/`. They share one target directory,
//! `target/guests`, so dependencies are compiled once for both and once for
//! every build of this crate (clippy, test). The generated `foreach_guest!`
//! macro lets the test crate assert that every guest has a test.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "wasm32-wasip2";

/// Variables of the outer cargo that must not leak into the guest build
/// (they would apply host flags, wrappers such as clippy, or another target
/// directory to it).
const SCRUBBED_ENV: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_PROFILE_RELEASE_DEBUG",
    "CARGO_PROFILE_RELEASE_OPT_LEVEL",
    "CARGO_INCREMENTAL",
    "DEBUG",
    "OPT_LEVEL",
    "PROFILE",
    "TARGET",
    "HOST",
    "NUM_JOBS",
    "RUSTC_LINKER",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let repo = manifest_dir
        .join("../..")
        .canonicalize()
        .expect("repository root");
    let target_dir = repo.join("target/guests");
    let workspaces = [repo.join("agents"), repo.join("tests/guests")];

    for path in [repo.join("guest-sdk"), repo.join("wit")] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let mut guests = Vec::new();
    for workspace in &workspaces {
        for member in members(workspace) {
            for file in ["src", "Cargo.toml", "agent.toml"] {
                println!("cargo:rerun-if-changed={}", member.join(file).display());
            }
            let name = member
                .file_name()
                .and_then(|n| n.to_str())
                .expect("guest directories have UTF-8 names")
                .replace('-', "_");
            guests.push(name);
        }
        println!(
            "cargo:rerun-if-changed={}",
            workspace.join("Cargo.toml").display()
        );
        build_workspace(workspace, &target_dir);
    }
    guests.sort();

    let wasm_dir = target_dir.join(GUEST_TARGET).join("release");
    let mut generated = String::new();
    for name in &guests {
        let path = wasm_dir.join(format!("{name}.wasm"));
        assert!(
            path.exists(),
            "guest {name} was not built at {}",
            path.display()
        );
        writeln!(
            generated,
            "/// Path of the `{name}` guest component.\npub const {}: &str = {:?};",
            name.to_uppercase(),
            path.display().to_string()
        )
        .unwrap();
    }
    writeln!(
        generated,
        "/// Calls `$mac!(name)` once per guest.\n#[macro_export]\nmacro_rules! foreach_guest {{\n    ($mac:ident) => {{"
    )
    .unwrap();
    for name in &guests {
        writeln!(generated, "        $mac!({name});").unwrap();
    }
    writeln!(generated, "    }};\n}}").unwrap();

    let out = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("guests.rs");
    std::fs::write(out, generated).expect("write guests.rs");
}

/// Member crates of a guest workspace: its subdirectories with a Cargo.toml.
fn members(workspace: &Path) -> Vec<PathBuf> {
    let mut members: Vec<PathBuf> = std::fs::read_dir(workspace)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", workspace.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    members.sort();
    members
}

fn build_workspace(workspace: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args([
            "build",
            "--release",
            "--workspace",
            "--target",
            GUEST_TARGET,
        ])
        .arg("--target-dir")
        .arg(target_dir);
    for variable in SCRUBBED_ENV {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo for {}: {e}", workspace.display()));
    assert!(
        status.success(),
        "building the guests in {} failed (is the wasm32-wasip2 target installed? \
         rust-toolchain.toml lists it)",
        workspace.display()
    );
}
