//! What publishers send: manifests, components, signatures.

use sovra_runtime::component::check_manifest_matches;
use sovra_runtime::packaging::embed_manifest;
use sovra_runtime::{AgentManifest, ComponentInfo};
use sovra_server::signature::{PluginSignature, PublisherId};

/// A manifest a fuzzed component is packed with.
const MANIFEST: &[u8] = b"name = \"fuzzed\"\nversion = \"0.1.0\"\nworld = \"agent\"\n\
    [capabilities]\nkv = true\nmodels = [\"m\"]\n";

/// Agent manifests (`agent.toml`, embedded in components).
pub fn manifest(data: &[u8]) {
    let _ = AgentManifest::parse(data);
}

/// The component inspector and the submission checks, on mutated real
/// components: reading, import needs, the manifest check, packing.
pub fn component(data: &[u8]) {
    if let Ok(info) = ComponentInfo::read(data) {
        let _ = info.import_needs();
        if let Some(manifest) = &info.manifest {
            let _ = check_manifest_matches(&info, manifest);
        }
    }
    let _ = embed_manifest(data, MANIFEST);
}

/// Plugin signatures (`Sovra-Signature`, `.sig` files) and publisher keys:
/// parsed, then verified against a fixed component.
pub fn signature(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PublisherId::from_hex(text);
    }
    if let Ok(signature) = serde_json::from_slice::<PluginSignature>(data)
        && let Ok(publisher) = PublisherId::from_hex(&signature.publisher)
    {
        let _ = publisher.verify(&signature, b"\0asm component", b"name = \"x\"");
    }
}
