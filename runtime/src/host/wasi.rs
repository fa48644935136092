//! The slice of WASI an agent gets: clocks, random, captured stdout/stderr,
//! an empty environment, and nothing else.
//!
//! `wasi:filesystem` is linked only because Rust's standard library imports
//! it at start-up; no directory is ever preopened, so no path resolves to
//! anything. `wasi:sockets` is linked only because the runtimes of other
//! languages (CPython under componentize-py) import it whether or not the
//! agent uses the network: TCP, UDP and name lookups are all disallowed, so
//! creating a socket fails with `access-denied` before any socket of the
//! host's exists, and a lookup resolves nothing. `wasi:http` is not linked at
//! all but `wasi:http/types` (the request and response an HTTP handler
//! gets, see [`crate::http_trigger`]): a component that imports
//! `outgoing-handler` is refused before it runs (see [`crate::capability`]).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView as _};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView as _};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView as _};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::random::{WasiRandom, WasiRandomCtx};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView as _};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiView};
use wasmtime_wasi_http::{WasiHttp, WasiHttpView as _};
use wasmtime_wasi_io::bindings::wasi::io;
use wasmtime_wasi_io::poll::DynPollable;

use crate::fair_share::Turns;
use crate::limits::{MAX_CAPTURED_OUTPUT, MAX_WASI_RANDOM_BYTES};
use crate::output::{CapturedOutput, StreamName};
use crate::sandbox::Sandbox;

/// `wasi:io` host functions only need the resource table.
struct IoTable;

impl HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// `wasi:io/poll`, whose waits give the invocation's execution slot up: a
/// guest sleeping or blocked on a pollable runs no code, and must not keep
/// other tenants' guests from running.
struct PollAway;

impl HasData for PollAway {
    type Data<'a> = TableAndTurns<'a>;
}

/// The resource table and the invocation's turns at an execution slot.
pub(crate) struct TableAndTurns<'a> {
    table: &'a mut ResourceTable,
    turns: &'a Arc<Turns>,
}

impl io::poll::Host for TableAndTurns<'_> {
    async fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        let turns = Arc::clone(self.turns);
        turns
            .away(io::poll::Host::poll(self.table, pollables))
            .await
    }
}

impl io::poll::HostPollable for TableAndTurns<'_> {
    async fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        let turns = Arc::clone(self.turns);
        turns
            .away(io::poll::HostPollable::block(self.table, pollable))
            .await
    }

    async fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        io::poll::HostPollable::ready(self.table, pollable).await
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        io::poll::HostPollable::drop(self.table, pollable)
    }
}

/// `wasi:random` with a cap on the bytes one call may ask for
/// ([`MAX_WASI_RANDOM_BYTES`]), refused with a typed limit.
struct CappedRandom;

impl HasData for CappedRandom {
    type Data<'a> = CappedRandomCtx<'a>;
}

pub(crate) struct CappedRandomCtx<'a>(&'a mut WasiRandomCtx);

/// A guest asked one host call for more than it may produce.
#[derive(Debug, thiserror::Error)]
#[error("{call} asked for {requested} bytes; one call may produce at most {limit}")]
pub(crate) struct HostCallResultLimitExceeded {
    pub(crate) call: &'static str,
    pub(crate) requested: u64,
    pub(crate) limit: u64,
}

fn check_random_len(call: &'static str, len: u64) -> wasmtime::Result<()> {
    if len > MAX_WASI_RANDOM_BYTES {
        return Err(wasmtime::Error::new(HostCallResultLimitExceeded {
            call,
            requested: len,
            limit: MAX_WASI_RANDOM_BYTES,
        }));
    }
    Ok(())
}

impl random::random::Host for CappedRandomCtx<'_> {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        check_random_len("wasi:random/random.get-random-bytes", len)?;
        random::random::Host::get_random_bytes(self.0, len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        random::random::Host::get_random_u64(self.0)
    }
}

impl random::insecure::Host for CappedRandomCtx<'_> {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        check_random_len("wasi:random/insecure.get-insecure-random-bytes", len)?;
        random::insecure::Host::get_insecure_random_bytes(self.0, len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        random::insecure::Host::get_insecure_random_u64(self.0)
    }
}

/// Adds the allowed WASI interfaces to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    type T = Sandbox;
    io::error::add_to_linker::<T, IoTable>(linker, |t| t.ctx().table)?;
    io::poll::add_to_linker::<T, PollAway>(linker, |t| TableAndTurns {
        table: &mut t.table,
        turns: &t.turns,
    })?;
    io::streams::add_to_linker::<T, IoTable>(linker, |t| t.ctx().table)?;

    clocks::wall_clock::add_to_linker::<T, WasiClocks>(linker, T::clocks)?;
    clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(linker, T::clocks)?;
    random::random::add_to_linker::<T, CappedRandom>(linker, |t| {
        CappedRandomCtx(t.ctx().ctx.random())
    })?;
    random::insecure::add_to_linker::<T, CappedRandom>(linker, |t| {
        CappedRandomCtx(t.ctx().ctx.random())
    })?;
    random::insecure_seed::add_to_linker::<T, WasiRandom>(linker, |t| t.ctx().ctx.random())?;

    cli::exit::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(linker, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(linker, T::cli)?;

    filesystem::types::add_to_linker::<T, WasiFilesystem>(linker, T::filesystem)?;
    filesystem::preopens::add_to_linker::<T, WasiFilesystem>(linker, T::filesystem)?;

    // Every use refused by the context (`sandbox_ctx`): no TCP, no UDP, no
    // name lookup.
    sockets::network::add_to_linker::<T, WasiSockets>(linker, &Default::default(), T::sockets)?;
    sockets::instance_network::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;
    sockets::tcp_create_socket::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;
    sockets::tcp::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;
    sockets::udp_create_socket::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;
    sockets::udp::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;
    sockets::ip_name_lookup::add_to_linker::<T, WasiSockets>(linker, T::sockets)?;

    // An HTTP handler's request and response types; `outgoing-handler` is
    // never linked, so no request leaves the node.
    wasmtime_wasi_http::p2::bindings::http::types::add_to_linker::<T, WasiHttp>(
        linker,
        &wasmtime_wasi_http::p2::bindings::LinkOptions::default().into(),
        T::http,
    )?;
    Ok(())
}

/// Captured output of one sandbox, readable after the guest is gone.
#[derive(Debug, Clone)]
pub(crate) struct CapturedStdio {
    pub(crate) stdout: CapturedOutput,
    pub(crate) stderr: CapturedOutput,
}

/// A WASI context with no environment, preopens or network (no socket can
/// be created, no name resolved), and bounded captured stdout/stderr. Agents
/// get no arguments and an empty stdin; a command (`Some((name, input))`)
/// gets its name as its only argument and the invocation's input on stdin.
pub(crate) fn sandbox_ctx(command: Option<(&str, &[u8])>) -> (WasiCtx, CapturedStdio) {
    let stdio = CapturedStdio {
        stdout: CapturedOutput::new(StreamName::Stdout, MAX_CAPTURED_OUTPUT),
        stderr: CapturedOutput::new(StreamName::Stderr, MAX_CAPTURED_OUTPUT),
    };
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdio.stdout.clone())
        .stderr(stdio.stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some((name, input)) = command {
        builder
            .arg(name)
            .stdin(MemoryInputPipe::new(bytes::Bytes::copy_from_slice(input)));
    }
    (builder.build(), stdio)
}
