//! The operator's files: models.toml and the node's configuration.

use sovra_gpu::config::load_registry_on;
use sovra_gpu::cuda::DeviceChoice;
use sovra_server::config::NodeConfig;

use crate::files::as_file;

/// models.toml, parsed and its models loaded (a path that exists is loaded
/// too, and must fail cleanly if it is no model).
pub fn models_toml(data: &[u8]) {
    let (_dir, path) = as_file("models.toml", data);
    let _ = load_registry_on(&path, DeviceChoice::Cpu);
}

/// The node's configuration file (`sovra serve --config`).
pub fn node_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = NodeConfig::parse(text, std::path::Path::new("/fuzz/sovra.toml"));
    }
}
