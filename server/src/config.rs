//! The node's configuration file (`sovra.toml`): where it listens and keeps
//! its data, which models it serves, the limits it enforces and the ceilings
//! no tenant's grants may pass. Neither the operator token nor the node key
//! (which seals every database's key) appears here: each is read from the
//! file or environment variable the config names. With no node key named,
//! `SOVRA_NODE_KEY` is read, else `<data-dir>/node.key` is generated once,
//! which protects nothing against a copy of the data disk.
//!
//! ```toml
//! listen = "127.0.0.1:8700"
//! data-dir = "/var/lib/sovra"
//! models = "/etc/sovra/models.toml"      # optional
//! device = "auto"                        # auto, cpu, cuda, cuda:N
//! operator-token-env = "SOVRA_OPERATOR_TOKEN"   # or operator-token-file = "..."
//! node-key-file = "/etc/sovra/node.key"   # or node-key-env = "..."; 64 hex digits
//!
//! [limits]
//! max-body = "1MiB"              # JSON request bodies
//! max-plugin = "32MiB"           # plugin submissions
//! request-timeout = "30s"
//! tenant-concurrency = 8         # invocations in flight per tenant
//! tenant-rate = 200              # invocations per second per tenant (sustained)
//! tenant-burst = 400
//! header-timeout = "10s"         # to send a request's headers; also closes idle keep-alive
//! max-connections = 2000         # default: what the open-files limit leaves room for
//! max-open-tenant-databases = 200   # default: likewise
//!
//! [ceilings]                     # the most an install may grant
//! capabilities = ["kv", "sql", "vector", "inference"]
//! timeout = "30s"
//! max-memory = "256MiB"
//!
//! [compile]                      # the worker process that compiles submissions
//! timeout = "60s"
//! max-memory = "2GiB"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sovra_gpu::cuda::DeviceChoice;
use sovra_runtime::Capability;
use sovra_runtime::limits::{MAX_COMPONENT_BYTES, MAX_MEMORY_CEILING, MAX_TIMEOUT};
use sovra_runtime::units::{parse_bytes, parse_duration};

/// Environment variable the operator token is read from by default.
pub const DEFAULT_OPERATOR_TOKEN_ENV: &str = "SOVRA_OPERATOR_TOKEN";

/// Shortest operator token accepted.
/// Stops: a guessable admin credential on a network-facing node.
pub const MIN_OPERATOR_TOKEN_BYTES: usize = 24;

/// Time to send a request's headers by default (see
/// [`ServerLimits::header_timeout`]).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest plugin submission by default.
pub const DEFAULT_MAX_PLUGIN_BYTES: usize = 32 << 20;

/// A node's validated configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub models: Option<PathBuf>,
    /// Where text models run.
    pub device: DeviceChoice,
    pub operator_token: OperatorTokenSource,
    /// Where the node key comes from.
    pub node_key: NodeKeySource,
    pub limits: ServerLimits,
    pub ceilings: Ceilings,
    pub compile: CompileLimits,
}

/// Where the operator token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperatorTokenSource {
    Env(String),
    File(PathBuf),
}

/// Limits on what callers may send and how often.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    /// Largest JSON body. Stops: memory exhaustion by huge requests.
    pub max_body: usize,
    /// Largest plugin submission. Stops: disk and compile-time exhaustion.
    pub max_plugin: usize,
    /// Longest a non-streaming request may take. Stops: stuck connections
    /// holding resources.
    pub request_timeout: Duration,
    /// Invocations one tenant may have in flight. Stops: one tenant taking
    /// every sandbox slot from the others.
    pub tenant_concurrency: u32,
    /// Sustained invocations per second per tenant, and the burst above it.
    /// Stops: one tenant flooding the node.
    pub tenant_rate: f64,
    pub tenant_burst: f64,
    /// Time a client has to send a request's headers, counted from when
    /// the connection opens or its previous response ends: it also closes
    /// keep-alive connections idle that long. Stops: slow-header and idle
    /// connections holding descriptors.
    pub header_timeout: Duration,
    /// Connections open at once (`None`: what the descriptor budget allows).
    /// Stops: sockets exhausting the process's descriptors.
    pub max_connections: Option<usize>,
    /// Tenant databases open at once (`None`: what the descriptor budget
    /// allows). Stops: every tenant that ran holding descriptors forever.
    pub max_open_tenant_dbs: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_body: 1 << 20,
            max_plugin: DEFAULT_MAX_PLUGIN_BYTES,
            request_timeout: Duration::from_secs(30),
            tenant_concurrency: 8,
            tenant_rate: 1000.0,
            tenant_burst: 2000.0,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: None,
            max_open_tenant_dbs: None,
        }
    }
}

/// The most any install may grant: the runtime's one grants policy.
pub use sovra_runtime::policy::Ceilings;
pub use sovra_runtime::sealing::NodeKeySource;

/// Limits of the worker process that compiles a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Wall-clock time, after which the worker is killed. Stops: components
    /// crafted to compile forever.
    pub timeout: Duration,
    /// Address space of the worker. Stops: compile-time memory bombs.
    pub max_memory: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        CompileLimits {
            timeout: Duration::from_secs(60),
            max_memory: 2 << 30,
        }
    }
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "no operator token: set the environment variable {0} (at least \
         {MIN_OPERATOR_TOKEN_BYTES} characters)"
    )]
    MissingTokenEnv(String),
    #[error("cannot read the operator token file {path}: {source}")]
    TokenFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the operator token is {0} characters; it must be at least {MIN_OPERATOR_TOKEN_BYTES}")]
    WeakToken(usize),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    models: Option<PathBuf>,
    device: Option<String>,
    operator_token_env: Option<String>,
    operator_token_file: Option<PathBuf>,
    node_key_env: Option<String>,
    node_key_file: Option<PathBuf>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    ceilings: RawCeilings,
    #[serde(default)]
    compile: RawCompile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawLimits {
    max_body: Option<String>,
    max_plugin: Option<String>,
    request_timeout: Option<String>,
    tenant_concurrency: Option<u32>,
    tenant_rate: Option<f64>,
    tenant_burst: Option<f64>,
    header_timeout: Option<String>,
    max_connections: Option<usize>,
    max_open_tenant_databases: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCeilings {
    capabilities: Option<Vec<String>>,
    timeout: Option<String>,
    max_memory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCompile {
    timeout: Option<String>,
    max_memory: Option<String>,
}

impl NodeConfig {
    /// Defaults for a node keeping its data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8700)),
            data_dir: data_dir.into(),
            models: None,
            device: DeviceChoice::Auto,
            operator_token: OperatorTokenSource::Env(DEFAULT_OPERATOR_TOKEN_ENV.into()),
            node_key: NodeKeySource::Default,
            limits: ServerLimits::default(),
            ceilings: Ceilings::node_default(),
            compile: CompileLimits::default(),
        }
    }

    /// Reads and validates a config file; relative paths in it are relative
    /// to the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses config text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let anchor = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let data_dir = raw
            .data_dir
            .map(anchor)
            .ok_or_else(|| invalid("`data-dir` is required".into()))?;
        let mut config = NodeConfig::new(data_dir);
        if let Some(listen) = raw.listen {
            config.listen = listen.parse().map_err(|_| {
                invalid(format!(
                    "`listen` {listen:?} is not an address like 127.0.0.1:8700"
                ))
            })?;
        }
        config.models = raw.models.map(anchor);
        if let Some(device) = raw.device {
            config.device = device
                .parse()
                .map_err(|e| invalid(format!("`device`: {e}")))?;
        }
        config.operator_token = match (raw.operator_token_env, raw.operator_token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set `operator-token-env` or `operator-token-file`, not both".into(),
                ));
            }
            (Some(env), None) => OperatorTokenSource::Env(env),
            (None, Some(file)) => OperatorTokenSource::File(anchor(file)),
            (None, None) => OperatorTokenSource::Env(DEFAULT_OPERATOR_TOKEN_ENV.into()),
        };
        config.node_key = match (raw.node_key_env, raw.node_key_file) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "set `node-key-env` or `node-key-file`, not both".into(),
                ));
            }
            (Some(env), None) => NodeKeySource::Env(env),
            (None, Some(file)) => NodeKeySource::File(anchor(file)),
            (None, None) => NodeKeySource::Default,
        };
        let field = |name: &str, e: String| invalid(format!("`{name}`: {e}"));
        let limits = &mut config.limits;
        if let Some(v) = raw.limits.max_body {
            limits.max_body = parse_bytes(&v).map_err(|e| field("limits.max-body", e))? as usize;
        }
        if let Some(v) = raw.limits.max_plugin {
            let bytes = parse_bytes(&v).map_err(|e| field("limits.max-plugin", e))?;
            if bytes > MAX_COMPONENT_BYTES {
                return Err(field(
                    "limits.max-plugin",
                    format!("at most {MAX_COMPONENT_BYTES} bytes (the runtime's component limit)"),
                ));
            }
            limits.max_plugin = bytes as usize;
        }
        if let Some(v) = raw.limits.request_timeout {
            limits.request_timeout =
                parse_duration(&v).map_err(|e| field("limits.request-timeout", e))?;
        }
        if let Some(v) = raw.limits.tenant_concurrency {
            if v == 0 {
                return Err(field(
                    "limits.tenant-concurrency",
                    "must be at least 1".into(),
                ));
            }
            limits.tenant_concurrency = v;
        }
        if let Some(v) = raw.limits.tenant_rate {
            if !(v > 0.0 && v.is_finite()) {
                return Err(field(
                    "limits.tenant-rate",
                    "must be a positive number".into(),
                ));
            }
            limits.tenant_rate = v;
            limits.tenant_burst = limits.tenant_burst.max(v);
        }
        if let Some(v) = raw.limits.tenant_burst {
            if !(v >= 1.0 && v.is_finite()) {
                return Err(field("limits.tenant-burst", "must be at least 1".into()));
            }
            limits.tenant_burst = v;
        }
        if let Some(v) = raw.limits.header_timeout {
            let timeout = parse_duration(&v).map_err(|e| field("limits.header-timeout", e))?;
            if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(600) {
                return Err(field(
                    "limits.header-timeout",
                    "must be between 100ms and 10m".into(),
                ));
            }
            limits.header_timeout = timeout;
        }
        for (name, value, slot) in [
            (
                "limits.max-connections",
                raw.limits.max_connections,
                &mut limits.max_connections,
            ),
            (
                "limits.max-open-tenant-databases",
                raw.limits.max_open_tenant_databases,
                &mut limits.max_open_tenant_dbs,
            ),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    return Err(field(name, "must be at least 1".into()));
                }
                *slot = Some(v);
            }
        }
        let ceilings = &mut config.ceilings;
        if let Some(names) = raw.ceilings.capabilities {
            ceilings.capabilities = names
                .iter()
                .map(|n| {
                    Capability::parse(n).ok_or_else(|| {
                        field(
                            "ceilings.capabilities",
                            format!("unknown capability `{n}` (known: kv, sql, vector, inference)"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = raw.ceilings.timeout {
            let timeout = parse_duration(&v).map_err(|e| field("ceilings.timeout", e))?;
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(field(
                    "ceilings.timeout",
                    format!("must be between 1ms and {MAX_TIMEOUT:?}"),
                ));
            }
            ceilings.timeout = timeout;
        }
        if let Some(v) = raw.ceilings.max_memory {
            let bytes = parse_bytes(&v).map_err(|e| field("ceilings.max-memory", e))?;
            if bytes == 0 || bytes > MAX_MEMORY_CEILING {
                return Err(field(
                    "ceilings.max-memory",
                    format!("must be between 64KiB and {MAX_MEMORY_CEILING} bytes"),
                ));
            }
            ceilings.max_memory = bytes;
        }
        if let Some(v) = raw.compile.timeout {
            config.compile.timeout = parse_duration(&v).map_err(|e| field("compile.timeout", e))?;
        }
        if let Some(v) = raw.compile.max_memory {
            config.compile.max_memory =
                parse_bytes(&v).map_err(|e| field("compile.max-memory", e))?;
        }
        Ok(config)
    }

    /// Reads the operator token from where the config says.
    pub fn operator_token(&self) -> Result<String, ConfigError> {
        let token = match &self.operator_token {
            OperatorTokenSource::Env(name) => {
                std::env::var(name).map_err(|_| ConfigError::MissingTokenEnv(name.clone()))?
            }
            OperatorTokenSource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let token = token.trim().to_owned();
        if token.len() < MIN_OPERATOR_TOKEN_BYTES {
            return Err(ConfigError::WeakToken(token.len()));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(text, Path::new("/etc/sovra/sovra.toml"))
    }

    #[test]
    fn reads_every_section_and_anchors_relative_paths() {
        let config = parse(
            r#"
            listen = "0.0.0.0:9000"
            data-dir = "data"
            models = "models.toml"
            operator-token-file = "token"
            node-key-file = "keys/node.key"
            [limits]
            max-body = "64KiB"
            tenant-concurrency = 2
            tenant-rate = 5
            [ceilings]
            capabilities = ["kv"]
            timeout = "2s"
            max-memory = "64MiB"
            [compile]
            timeout = "10s"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.data_dir, Path::new("/etc/sovra/data"));
        assert_eq!(config.models.unwrap(), Path::new("/etc/sovra/models.toml"));
        assert_eq!(
            config.operator_token,
            OperatorTokenSource::File("/etc/sovra/token".into())
        );
        assert_eq!(
            config.node_key,
            NodeKeySource::File("/etc/sovra/keys/node.key".into())
        );
        assert_eq!(config.limits.max_body, 64 << 10);
        assert_eq!(config.limits.tenant_concurrency, 2);
        assert_eq!(config.ceilings.capabilities, [Capability::Kv].into());
        assert_eq!(config.ceilings.timeout, Duration::from_secs(2));
        assert_eq!(config.compile.timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_config_names_the_field() {
        for (text, needle) in [
            ("listen = \"x\"\ndata-dir = \"d\"", "listen"),
            ("", "data-dir"),
            ("data-dir = \"d\"\nbogus = 1", "bogus"),
            ("data-dir = \"d\"\ndevice = \"tpu\"", "`device`"),
            (
                "data-dir = \"d\"\n[limits]\nmax-body = \"lots\"",
                "limits.max-body",
            ),
            (
                "data-dir = \"d\"\n[limits]\ntenant-concurrency = 0",
                "tenant-concurrency",
            ),
            (
                "data-dir = \"d\"\n[limits]\nmax-connections = 0",
                "limits.max-connections",
            ),
            (
                "data-dir = \"d\"\n[limits]\nheader-timeout = \"1ms\"",
                "limits.header-timeout",
            ),
            (
                "data-dir = \"d\"\n[ceilings]\ncapabilities = [\"net\"]",
                "`net`",
            ),
            (
                "data-dir = \"d\"\n[ceilings]\ntimeout = \"1h\"",
                "ceilings.timeout",
            ),
            (
                "data-dir = \"d\"\noperator-token-env = \"A\"\noperator-token-file = \"b\"",
                "not both",
            ),
            (
                "data-dir = \"d\"\nnode-key-env = \"A\"\nnode-key-file = \"b\"",
                "`node-key-env` or `node-key-file`, not both",
            ),
        ] {
            let error = parse(text).unwrap_err().to_string();
            assert!(error.contains(needle), "{text:?}: {error}");
        }
    }

    #[test]
    fn weak_or_missing_operator_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(dir.path());
        config.operator_token = OperatorTokenSource::Env("SOVRA_TEST_TOKEN_THAT_IS_NOT_SET".into());
        assert!(matches!(
            config.operator_token(),
            Err(ConfigError::MissingTokenEnv(_))
        ));
        let file = dir.path().join("token");
        std::fs::write(&file, "short\n").unwrap();
        config.operator_token = OperatorTokenSource::File(file.clone());
        assert!(matches!(
            config.operator_token(),
            Err(ConfigError::WeakToken(5))
        ));
        std::fs::write(&file, "a-long-enough-operator-token-123\n").unwrap();
        assert_eq!(
            config.operator_token().unwrap(),
            "a-long-enough-operator-token-123"
        );
    }
}
