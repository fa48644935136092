//! The WIT world an `agent.toml` calls for: its world (`agent`, `tool` or
//! `controller`) with only the `sovra:agent` interfaces the manifest
//! requests imported, plus the sovra WIT package as a dependency.
//!
//! Bindings generators (componentize-py, componentize-js) import every
//! interface of the world they are given, used or not; built against the
//! full `sovra:agent/agent` world, a Python or JavaScript agent would import
//! `sql` or `tools` it never asks for, and the host refuses a component that
//! imports what its manifest does not request. Built against this world, it
//! imports exactly what its manifest asks.

use std::fmt::Write as _;

use crate::manifest::{AgentManifest, World};

/// The `sovra:agent` WIT package this host serves, file by file.
pub const SOVRA_WIT_FILES: &[(&str, &str)] = &[
    ("agent.wit", include_str!("../../../wit/agent.wit")),
    (
        "controller.wit",
        include_str!("../../../wit/controller.wit"),
    ),
    ("inference.wit", include_str!("../../../wit/inference.wit")),
    ("kv.wit", include_str!("../../../wit/kv.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("sql.wit", include_str!("../../../wit/sql.wit")),
    ("tools.wit", include_str!("../../../wit/tools.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("vector.wit", include_str!("../../../wit/vector.wit")),
];

/// The version of `sovra:agent` in [`SOVRA_WIT_FILES`].
const SOVRA_WIT_VERSION: &str = "0.1.0";

/// The package the generated world lives in.
const BUILD_PACKAGE: &str = "sovra-build:agent";

/// Files making up a WIT directory to build against: paths relative to the
/// directory, and their text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldFiles {
    pub files: Vec<(String, String)>,
    /// The world to name to the bindings generator.
    pub world: &'static str,
}

/// The WIT directory for `manifest`: `world.wit` (the trimmed world) and
/// `deps/sovra-agent/*.wit`. `None` for a command or an HTTP handler: they
/// are built against `wasi:cli/command` or `wasi:http/proxy` (with `wasi:nn`
/// or Spin's interfaces) by their own toolchains.
pub fn world_files(manifest: &AgentManifest) -> Option<WorldFiles> {
    let export = match manifest.world {
        World::Agent => "handler",
        World::Tool => "tool-handler",
        World::Controller => "control",
        World::Command | World::Http => return None,
    };
    let mut files = vec![("world.wit".to_owned(), world_wit(manifest, export))];
    for (name, text) in SOVRA_WIT_FILES {
        files.push((format!("deps/sovra-agent/{name}"), (*text).to_owned()));
    }
    Some(WorldFiles {
        files,
        world: manifest.world.as_str(),
    })
}

/// The sovra interfaces `manifest` imports, in WIT order.
fn imported_interfaces(manifest: &AgentManifest) -> Vec<&'static str> {
    let asks = &manifest.capabilities;
    let mut interfaces = Vec::new();
    if !asks.models.is_empty() {
        interfaces.push("inference");
    }
    if manifest.world == World::Controller {
        interfaces.extend(["log", "safety"]);
        return interfaces;
    }
    for (asked, interface) in [(asks.kv, "kv"), (asks.sql, "sql"), (asks.vector, "vector")] {
        if asked {
            interfaces.push(interface);
        }
    }
    interfaces.push("log");
    if !asks.tools.is_empty() {
        interfaces.push("tools");
    }
    interfaces
}

fn world_wit(manifest: &AgentManifest, export: &str) -> String {
    let mut text = format!(
        "// The world the manifest of `{}` calls for, written by `sovra plugin wit`.\n\
         package {BUILD_PACKAGE};\n\nworld {} {{\n",
        manifest.name,
        manifest.world.as_str()
    );
    for interface in imported_interfaces(manifest) {
        let _ = writeln!(
            text,
            "    import sovra:agent/{interface}@{SOVRA_WIT_VERSION};"
        );
    }
    let _ = writeln!(
        text,
        "    export sovra:agent/{export}@{SOVRA_WIT_VERSION};\n}}"
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> AgentManifest {
        AgentManifest::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn every_wit_file_of_the_package_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = SOVRA_WIT_FILES.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, embedded);
        let header = format!("package sovra:agent@{SOVRA_WIT_VERSION};");
        assert!(
            SOVRA_WIT_FILES
                .iter()
                .any(|(_, text)| text.contains(&header))
        );
    }

    #[test]
    fn the_world_imports_only_what_the_manifest_asks() {
        let files = world_files(&manifest(
            "name = \"rag\"\nversion = \"0.1.0\"\nworld = \"agent\"\n\
             [capabilities]\nvector = true\nmodels = [\"minilm\"]",
        ))
        .unwrap();
        assert_eq!(files.world, "agent");
        let world = &files.files[0].1;
        for wanted in ["inference", "vector", "log"] {
            assert!(
                world.contains(&format!("import sovra:agent/{wanted}@0.1.0;")),
                "{world}"
            );
        }
        for unwanted in ["kv", "sql", "tools", "safety"] {
            assert!(
                !world.contains(&format!("sovra:agent/{unwanted}@")),
                "{world}"
            );
        }
        assert!(
            world.contains("export sovra:agent/handler@0.1.0;"),
            "{world}"
        );
    }

    #[test]
    fn tools_and_controllers_export_their_interface() {
        let tool = world_files(&manifest(
            "name = \"t\"\nversion = \"0.1.0\"\nworld = \"tool\"\n[capabilities]\nkv = true",
        ))
        .unwrap();
        assert!(
            tool.files[0]
                .1
                .contains("export sovra:agent/tool-handler@0.1.0;")
        );
        let controller = world_files(&manifest(
            "name = \"c\"\nversion = \"0.1.0\"\nworld = \"controller\"",
        ))
        .unwrap();
        let text = &controller.files[0].1;
        assert!(text.contains("import sovra:agent/safety@0.1.0;"), "{text}");
        assert!(text.contains("export sovra:agent/control@0.1.0;"), "{text}");
        let command = manifest("name = \"c\"\nversion = \"0.1.0\"\nworld = \"command\"");
        assert!(world_files(&command).is_none());
    }
}
