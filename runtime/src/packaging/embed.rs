//! Embedding a manifest into a built component, as the custom section
//! [`MANIFEST_SECTION`] that the runtime reads: the one path by which agents
//! in every language carry their manifest.
//!
//! The component is checked first as a node would check it (a component of
//! a sovra world, importing only what sovra provides and only what the
//! manifest requests), so a component that packs is one that loads.

use crate::component::{ComponentInfo, check_manifest_matches};
use crate::manifest::{AgentManifest, MANIFEST_SECTION};
use crate::packaging::PackError;

/// `component` with `manifest` (agent.toml bytes) embedded, after checking
/// that the two match.
pub fn embed_manifest(component: &[u8], manifest: &[u8]) -> Result<Vec<u8>, PackError> {
    let parsed = AgentManifest::parse(manifest)?;
    let info = ComponentInfo::read(component).map_err(PackError::Component)?;
    if info.manifest_source.is_some() {
        return Err(PackError::AlreadyPacked);
    }
    check_manifest_matches(&info, &parsed).map_err(PackError::Component)?;
    let mut packed = Vec::with_capacity(component.len() + manifest.len() + 32);
    packed.extend_from_slice(component);
    append_custom_section(&mut packed, MANIFEST_SECTION, manifest);
    Ok(packed)
}

/// Appends a custom section (id 0: size, name, data) to a component's bytes;
/// custom sections may come anywhere after the header.
fn append_custom_section(bytes: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    write_leb128(&mut payload, name.len());
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    bytes.push(0);
    write_leb128(bytes, payload.len());
    bytes.extend_from_slice(&payload);
}

/// Unsigned LEB128, as the Wasm binary format encodes sizes.
fn write_leb128(bytes: &mut Vec<u8>, mut value: usize) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return;
        }
        bytes.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_matches_the_format() {
        for (value, encoded) in [
            (0usize, vec![0u8]),
            (127, vec![0x7f]),
            (128, vec![0x80, 0x01]),
            (624_485, vec![0xe5, 0x8e, 0x26]),
        ] {
            let mut bytes = Vec::new();
            write_leb128(&mut bytes, value);
            assert_eq!(bytes, encoded, "{value}");
        }
    }

    #[test]
    fn a_bad_manifest_is_refused_before_the_component_is_read() {
        let err = embed_manifest(b"not wasm", b"name = \"Bad\"").unwrap_err();
        assert!(matches!(err, PackError::Manifest(_)), "{err}");
    }

    #[test]
    fn garbage_is_not_packed() {
        let manifest = b"name = \"a\"\nversion = \"1.0.0\"\nworld = \"agent\"";
        let err = embed_manifest(b"\0asm garbage", manifest).unwrap_err();
        assert!(matches!(err, PackError::Component(_)), "{err}");
    }
}
