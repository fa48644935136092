//! `sovra run`: run one invocation of an agent with explicit grants.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use sovra_gpu::config::load_registry_on;
use sovra_gpu::cuda::DeviceChoice;
use sovra_runtime::guest_text::escaped_lines;
use sovra_runtime::tools::{InstalledTool, StaticTools};
use sovra_runtime::units::{parse_bytes, parse_duration};
use sovra_runtime::{
    Agent, AgentManifest, Capability, Invocation, InvocationReport, Runtime, RuntimeConfig,
    TenantId, World,
};

use sovra_runtime::policy::{self, Ceilings, Effective, Grant};
use sovra_runtime::{Digest, read_component};
use sovra_server::compile::{CompileError, CompileWorker};
use sovra_server::config::CompileLimits;

use crate::exit::{Code, Failure, WithCode};

#[derive(Args)]
pub struct RunArgs {
    /// The agent component (.wasm, built for wasm32-wasip2).
    component: PathBuf,
    /// Tenant to run as; its storage lives under the data directory.
    #[arg(long, default_value = "dev")]
    tenant: String,
    /// Input text given to the agent.
    #[arg(long, conflicts_with = "input_file")]
    input: Option<String>,
    /// Read the input from a file (`-` for stdin).
    #[arg(long)]
    input_file: Option<PathBuf>,
    /// Request metadata, as key=value (repeatable).
    #[arg(long = "meta", value_parser = parse_pair)]
    metadata: Vec<(String, String)>,
    /// Capabilities to grant, comma-separated: kv, sql, vector.
    #[arg(long, value_delimiter = ',')]
    grant: Vec<String>,
    /// A model the agent may use (repeatable).
    #[arg(long = "allow-model")]
    allow_model: Vec<String>,
    /// A tool component (world `tool`) to make available, known by its
    /// manifest's name; it runs with what its own manifest asks for
    /// (repeatable).
    #[arg(long = "tool")]
    tools: Vec<PathBuf>,
    /// A tool the agent may call, by name (repeatable).
    #[arg(long = "allow-tool")]
    allow_tool: Vec<String>,
    /// Wall-clock limit, such as 500ms or 5s (default: the manifest's, else 5s).
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Memory limit, such as 64MiB (default: the manifest's, else 64MiB).
    #[arg(long, value_parser = parse_bytes)]
    max_memory: Option<u64>,
    /// Where tenant data, the audit log and compiled code live
    /// [env: SOVRA_DATA_DIR; default: .sovra]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Use this manifest instead of the one embedded in the component.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The operator's model file (models.toml) listing the models to serve.
    #[arg(long, env = "SOVRA_MODELS")]
    models: Option<PathBuf>,
    /// Where text models run: auto (the first usable GPU, else the CPU),
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "SOVRA_DEVICE", default_value = "auto")]
    device: DeviceChoice,
    /// Longest a component not compiled yet may take to compile, in a
    /// worker process (as a node does), such as 60s.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    compile_timeout: Duration,
    /// Memory the compile worker may use, such as 2GiB.
    #[arg(long, value_parser = parse_bytes, default_value = "2GiB")]
    compile_max_memory: u64,
}

pub(crate) fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let tenant = TenantId::new(&args.tenant).code(Code::Usage)?;
    let input = read_input(&args).code(Code::Usage)?;
    let grant = grant(&args).code(Code::Usage)?;
    policy::check_ceilings(&grant, &Ceilings::local()).code(Code::Usage)?;
    let manifest = args
        .manifest
        .as_ref()
        .map(|path| {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            AgentManifest::parse(&bytes).with_context(|| format!("in {}", path.display()))
        })
        .transpose()
        .code(Code::Usage)?;
    let tokio = tokio::runtime::Runtime::new().code(Code::Host)?;
    let loader = Loader::new(
        &tokio,
        args.data_dir.clone(),
        args.models.as_deref(),
        args.device,
        CompileLimits {
            timeout: args.compile_timeout,
            max_memory: args.compile_max_memory,
        },
    )?;
    let agent = loader.load(&args.component, manifest)?;
    let tools = loader.tools(&args.tools)?;
    let runtime = loader.runtime;
    // The same policy a node applies to an install, under the local ceilings.
    let Effective { grants, limits } =
        policy::effective(agent.manifest(), &grant, &Ceilings::local());
    let mut invocation = Invocation::new(tenant, input);
    invocation.grants = grants;
    invocation.limits = limits;
    invocation.metadata = args.metadata.clone();
    invocation.tools = Some(Arc::new(tools));
    let report = tokio.block_on(runtime.invoke(&agent, invocation));
    runtime.audit().flush();
    print_report(report)
}

/// Loads components for one run: each compiled in a worker first.
pub(crate) struct Loader<'a> {
    compiled_dir: Option<PathBuf>,
    pub(crate) runtime: Runtime,
    tokio: &'a tokio::runtime::Runtime,
    worker_limits: CompileLimits,
}

impl<'a> Loader<'a> {
    /// A runtime over `data_dir` (else `$SOVRA_DATA_DIR`, else `.sovra`)
    /// serving the models of `models` on `device`.
    pub(crate) fn new(
        tokio: &'a tokio::runtime::Runtime,
        data_dir: Option<PathBuf>,
        models: Option<&Path>,
        device: DeviceChoice,
        worker_limits: CompileLimits,
    ) -> Result<Self, Failure> {
        let data_dir = data_dir
            .or_else(|| std::env::var_os("SOVRA_DATA_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".sovra"));
        let mut config = RuntimeConfig::new(&data_dir);
        if let Some(models) = models {
            config.models = Arc::new(load_registry_on(models, device).code(Code::Usage)?);
        }
        Ok(Loader {
            compiled_dir: config.compiled_dir.clone(),
            runtime: Runtime::new(config).code(Code::Host)?,
            tokio,
            worker_limits,
        })
    }

    /// The component at `path`, compiled and loaded (`manifest` overrides
    /// its own).
    pub(crate) fn load(
        &self,
        path: &Path,
        manifest: Option<AgentManifest>,
    ) -> Result<Arc<Agent>, Failure> {
        let bytes = read_component(path)
            .with_context(|| format!("cannot load {}", path.display()))
            .code(Code::Usage)?;
        if let Some(compiled_dir) = &self.compiled_dir {
            self.compile_in_a_worker(path, &bytes, compiled_dir)?;
        }
        self.runtime
            .load(&bytes, manifest)
            .with_context(|| format!("cannot load {}", path.display()))
            .code(Code::Usage)
    }

    /// The `--tool` components, each granted what its manifest asks for
    /// (under the local ceilings).
    fn tools(&self, paths: &[PathBuf]) -> Result<StaticTools, Failure> {
        let mut tools = StaticTools::new();
        for path in paths {
            let tool = self.load(path, None)?;
            if tool.manifest().world != World::Tool {
                return Err(anyhow::anyhow!(
                    "{} is not a tool: its world is `{}`",
                    path.display(),
                    tool.manifest().world.as_str()
                ))
                .code(Code::Usage);
            }
            let grant = Grant::as_requested(&tool.manifest().capabilities);
            let Effective { grants, limits } =
                policy::effective(tool.manifest(), &grant, &Ceilings::local());
            tools.add(InstalledTool {
                agent: tool,
                grants,
                limits,
            });
        }
        Ok(tools)
    }

    /// Compiles the component in a worker process under the compile limits
    /// unless it is compiled already, as a node does with a submission: a
    /// component crafted to exhaust the compiler costs a child process and ends
    /// in a clear error, not in this process running out of time or memory.
    fn compile_in_a_worker(
        &self,
        path: &Path,
        bytes: &[u8],
        compiled_dir: &Path,
    ) -> Result<(), Failure> {
        if self.runtime.is_compiled(&Digest::of(bytes)) {
            return Ok(());
        }
        std::fs::create_dir_all(compiled_dir)
            .with_context(|| format!("cannot create {}", compiled_dir.display()))
            .code(Code::Host)?;
        let worker = CompileWorker {
            program: std::env::current_exe()
                .context("cannot find the sovra binary for the compile worker")
                .code(Code::Host)?,
            limits: self.worker_limits,
        };
        match self.tokio.block_on(worker.compile(path, compiled_dir)) {
            Ok(()) => Ok(()),
            // Not a component at all, or malformed: the load says what is wrong.
            Err(CompileError::Invalid(_)) => Ok(()),
            Err(error @ (CompileError::TimedOut(_) | CompileError::Crashed(_))) => {
                Err(anyhow::Error::new(error))
                    .with_context(|| format!("cannot load {}", path.display()))
                    .code(Code::Limit)
            }
            Err(error) => Err(anyhow::Error::new(error)).code(Code::Host),
        }
    }
}

fn read_input(args: &RunArgs) -> anyhow::Result<String> {
    match (&args.input, &args.input_file) {
        (Some(text), _) => Ok(text.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => {
            std::io::read_to_string(std::io::stdin()).context("cannot read stdin")
        }
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read input file {}", path.display())),
        (None, None) => Ok(String::new()),
    }
}

/// What the flags grant.
fn grant(args: &RunArgs) -> anyhow::Result<Grant> {
    let mut grant = Grant::default();
    for name in &args.grant {
        match Capability::parse(name.trim()) {
            Some(Capability::Kv) => grant.kv = true,
            Some(Capability::Sql) => grant.sql = true,
            Some(Capability::Vector) => grant.vector = true,
            Some(Capability::Inference) => {
                anyhow::bail!("grant inference by naming models with --allow-model NAME")
            }
            Some(Capability::Tools) => {
                anyhow::bail!("grant tools by naming them with --allow-tool NAME")
            }
            None => {
                anyhow::bail!("unknown capability `{name}` in --grant (known: kv, sql, vector)")
            }
        }
    }
    grant.models = args.allow_model.iter().cloned().collect::<BTreeSet<_>>();
    grant.tools = args.allow_tool.iter().cloned().collect::<BTreeSet<_>>();
    grant.timeout_ms = args.timeout.map(|t| t.as_millis().max(1) as u64);
    grant.max_memory = args.max_memory;
    Ok(grant)
}

/// `text` escaped line by line, its line breaks kept.
fn escape_controls_keeping_lines(text: &str) -> String {
    let mut lines = escaped_lines(text.as_bytes()).join("\n");
    if text.ends_with('\n') {
        lines.push('\n');
    }
    lines
}

/// Response on stdout; the agent's logs and captured output on stderr.
fn print_report(report: InvocationReport) -> Result<ExitCode, Failure> {
    let mut stderr = std::io::stderr().lock();
    for line in &report.logs {
        let fields: String = line
            .fields
            .iter()
            .map(|(key, value)| format!(" {key}={value}"))
            .collect();
        let _ = writeln!(
            stderr,
            "[agent {}] {}{fields}",
            line.level.as_str(),
            line.message
        );
    }
    if report.dropped_logs > 0 {
        let _ = writeln!(
            stderr,
            "[sovra] {} more log lines dropped",
            report.dropped_logs
        );
    }
    // Captured output is the agent's: each line marked and escaped, so it
    // cannot pass for sovra's own or drive the terminal.
    for (stream, bytes) in [("stdout", &report.stdout), ("stderr", &report.stderr)] {
        for line in escaped_lines(bytes) {
            let _ = writeln!(stderr, "[agent {stream}] {line}");
        }
    }
    drop(stderr);
    match report.result {
        Ok(response) => {
            let mut stdout = std::io::stdout().lock();
            // The response is data for whoever reads stdout: kept exact for a
            // pipe or file, escaped for a terminal.
            let output = if stdout.is_terminal() {
                escape_controls_keeping_lines(&response.output)
            } else {
                response.output.clone()
            };
            let _ = stdout.write_all(output.as_bytes());
            if !output.ends_with('\n') {
                let _ = stdout.write_all(b"\n");
            }
            // An HTTP handler's error status is the agent's error.
            let status = response
                .metadata
                .iter()
                .find(|(key, _)| key == sovra_runtime::http_trigger::STATUS)
                .and_then(|(_, status)| status.parse::<u16>().ok());
            match status {
                Some(status) if status >= 400 => {
                    eprintln!("[sovra] the handler answered HTTP {status}");
                    Ok(Code::AgentError.into())
                }
                _ => Ok(ExitCode::SUCCESS),
            }
        }
        Err(error) => Err(Failure {
            code: Code::of(&error),
            error: anyhow::Error::new(error),
        }),
    }
}
