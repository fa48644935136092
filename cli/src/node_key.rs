//! The node key for commands that open a data directory's databases offline
//! (`sovra audit verify`, `sovra plugin log`, `sovra tenant rekey`): the
//! file named with `--node-key-file`, else `$SOVRA_NODE_KEY`, else the
//! data directory's own `node.key`. These commands never generate a key.

use std::path::{Path, PathBuf};

use sovra_runtime::sealing::{NodeKey, NodeKeySource};

use crate::exit::{Code, Failure, WithCode};

#[derive(clap::Args, Debug, Clone)]
pub struct NodeKeyArgs {
    /// File holding the node key (64 hex digits) [default: $SOVRA_NODE_KEY,
    /// else <data-dir>/node.key]
    #[arg(long, value_name = "FILE")]
    pub node_key_file: Option<PathBuf>,
}

impl NodeKeyArgs {
    /// The node key of the data directory `data_dir`.
    pub fn load(&self, data_dir: &Path) -> Result<NodeKey, Failure> {
        let source = match &self.node_key_file {
            Some(file) => NodeKeySource::File(file.clone()),
            None => NodeKeySource::Default,
        };
        NodeKey::load(&source, data_dir, || true).code(Code::Usage)
    }
}

/// Where a data directory's runtime keeps its databases: a node keeps them
/// under `runtime/`, `sovra run` at the top.
pub fn runtime_dir(data_dir: &Path) -> PathBuf {
    let node = data_dir.join("runtime");
    if node.is_dir() {
        node
    } else {
        data_dir.to_owned()
    }
}
