//! Reading a component before anything runs it: is it a component at all,
//! which sovra world it implements, what it imports and exports, and the
//! manifest it carries. Nothing here compiles or executes guest code.

use wasmparser::{Parser, Payload};

use crate::capability::{ImportNeed, SOVRA_PACKAGE, UnsupportedImport, classify_import};
use crate::digest::Digest;
use crate::error::LoadError;
use crate::manifest::{AgentManifest, MANIFEST_SECTION, World};

/// The export that makes a component a WASI command.
const WASI_CLI_RUN_PREFIX: &str = "wasi:cli/run@0.2.";

/// The export that makes a component an HTTP handler.
const WASI_HTTP_HANDLER_PREFIX: &str = "wasi:http/incoming-handler@0.2.";

/// What a component is, read from its bytes.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub digest: Digest,
    pub size: usize,
    pub world: World,
    /// Component-level import names, such as `sovra:agent/kv@0.1.0`.
    pub imports: Vec<String>,
    /// Component-level export names.
    pub exports: Vec<String>,
    /// The embedded manifest, if the component carries one.
    pub manifest: Option<AgentManifest>,
    /// The embedded manifest's bytes, as signed by publishers.
    pub manifest_source: Option<Vec<u8>>,
}

impl ComponentInfo {
    /// Reads `bytes` as a sovra component. Fails on anything that is not a
    /// well-formed component exporting a sovra world.
    pub fn read(bytes: &[u8]) -> Result<Self, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        if Parser::is_core_wasm(bytes) {
            return Err(LoadError::CoreModule);
        }
        if !Parser::is_component(bytes) {
            return Err(LoadError::Malformed(
                "unknown Wasm encoding or version".into(),
            ));
        }
        let sections = Sections::parse(bytes)?;
        let world = detect_world(&sections.exports)?;
        let manifest = sections
            .manifest
            .map(|bytes| AgentManifest::parse(bytes).map_err(LoadError::Manifest))
            .transpose()?;
        let manifest_source = sections.manifest.map(<[u8]>::to_vec);
        Ok(ComponentInfo {
            digest: Digest::of(bytes),
            size: bytes.len(),
            world,
            imports: sections.imports,
            exports: sections.exports,
            manifest,
            manifest_source,
        })
    }

    /// The capabilities the component's imports need, checked against the set
    /// the host can provide at all.
    pub fn import_needs(&self) -> Result<Vec<(String, ImportNeed)>, LoadError> {
        self.imports
            .iter()
            .map(|name| {
                let need = classify_import(name).map_err(LoadError::UnsupportedImport)?;
                if need == ImportNeed::Controller && self.world != World::Controller {
                    return Err(LoadError::UnsupportedImport(UnsupportedImport::new(
                        name,
                        " (only controllers, in episodes, may import it)",
                    )));
                }
                Ok((name.clone(), need))
            })
            .collect()
    }
}

/// Checks that the component imports nothing its manifest does not request,
/// and implements the world its manifest names.
pub fn check_manifest_matches(
    info: &ComponentInfo,
    manifest: &AgentManifest,
) -> Result<(), LoadError> {
    if manifest.world != info.world {
        return Err(LoadError::ManifestMismatch(format!(
            "the manifest says world `{}` but the component implements `{}`",
            manifest.world.as_str(),
            info.world.as_str()
        )));
    }
    for (interface, need) in info.import_needs()? {
        let ImportNeed::Grant(capability) = need else {
            continue;
        };
        if !manifest.capabilities.asks(capability) {
            return Err(LoadError::ManifestMismatch(format!(
                "the component imports `{interface}` but its manifest does not request `{capability}`"
            )));
        }
    }
    Ok(())
}

struct Sections<'a> {
    imports: Vec<String>,
    exports: Vec<String>,
    manifest: Option<&'a [u8]>,
}

impl<'a> Sections<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, LoadError> {
        let malformed = |e: wasmparser::BinaryReaderError| LoadError::Malformed(e.to_string());
        let mut sections = Sections {
            imports: Vec::new(),
            exports: Vec::new(),
            manifest: None,
        };
        // Nesting depth: 0 is the outer component itself.
        let mut depth = 0usize;
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.map_err(malformed)? {
                Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
                Payload::End(_) => depth = depth.saturating_sub(1),
                Payload::ComponentImportSection(reader) if depth == 0 => {
                    for import in reader {
                        sections
                            .imports
                            .push(import.map_err(malformed)?.name.0.to_owned());
                    }
                }
                Payload::ComponentExportSection(reader) if depth == 0 => {
                    for export in reader {
                        sections
                            .exports
                            .push(export.map_err(malformed)?.name.0.to_owned());
                    }
                }
                Payload::CustomSection(section) if section.name() == MANIFEST_SECTION => {
                    if sections.manifest.is_some() {
                        return Err(LoadError::Manifest(crate::ManifestError::Syntax(
                            "the component carries more than one manifest".into(),
                        )));
                    }
                    sections.manifest = Some(section.data());
                }
                _ => {}
            }
        }
        Ok(sections)
    }
}

fn detect_world(exports: &[String]) -> Result<World, LoadError> {
    let exports_interface = |name: &str| {
        let prefix = format!("{SOVRA_PACKAGE}/{name}@0.1.");
        exports.iter().any(|export| export.starts_with(&prefix))
    };
    // A WASI command or HTTP handler that exports no sovra interface runs
    // as one (an HTTP handler that is also a command is an HTTP handler).
    let exports_any = |prefix: &str| exports.iter().any(|export| export.starts_with(prefix));
    let standard = if exports_any(WASI_HTTP_HANDLER_PREFIX) {
        Some(World::Http)
    } else if exports_any(WASI_CLI_RUN_PREFIX) {
        Some(World::Command)
    } else {
        None
    };
    let worlds: Vec<World> = [
        ("handler", World::Agent),
        ("tool-handler", World::Tool),
        ("control", World::Controller),
    ]
    .into_iter()
    .filter(|(interface, _)| exports_interface(interface))
    .map(|(_, world)| world)
    .collect();
    match (worlds.as_slice(), standard) {
        ([world], _) => Ok(*world),
        ([], Some(world)) => Ok(world),
        ([], None) => Err(LoadError::WrongWorld(format!(
            "it exports none of sovra:agent/handler@0.1.x, sovra:agent/tool-handler@0.1.x, \
             sovra:agent/control@0.1.x, wasi:cli/run@0.2.x and \
             wasi:http/incoming-handler@0.2.x (its exports: {})",
            if exports.is_empty() {
                "none".to_owned()
            } else {
                exports.join(", ")
            }
        ))),
        (several, _) => Err(LoadError::WrongWorld(format!(
            "it implements more than one sovra world ({})",
            several
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
