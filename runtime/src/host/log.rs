//! `sovra:agent/log`: guest log lines into the host's tracing, tagged with the
//! tenant, agent and invocation the host knows (a guest cannot forge them),
//! and kept (bounded) for the invocation's report. Control characters in the
//! guest's text are escaped first ([`crate::guest_text`]).

use std::borrow::Cow;

use crate::bindings::Pair;
use crate::bindings::sovra::agent::log::{Host, Level};
use crate::guest_text::escape_controls;
use crate::invocation::LiveEvent;
use crate::sandbox::{LogLevel, LogLine, Sandbox};

impl Host for Sandbox {
    async fn log(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Pair>,
    ) -> wasmtime::Result<()> {
        self.charge_host_call()?;
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        // Escaped once, here: every later reader (the host's log, the CLI, a
        // streaming client, the report) gets text that cannot drive a
        // terminal or forge a log line.
        let safe = |text: String| match escape_controls(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(escaped) => escaped,
        };
        let line = LogLine {
            level,
            message: safe(message),
            fields: fields
                .into_iter()
                .map(|p| (safe(p.key), safe(p.value)))
                .collect(),
        };
        emit(&self.identity, &line);
        if let Some(kept) = self.logs.push(line) {
            let kept = kept.clone();
            self.emit(|| LiveEvent::Log(kept));
        }
        Ok(())
    }
}

/// Sends one guest line to tracing under the `sovra::guest` target.
fn emit(identity: &crate::sandbox::Identity, line: &LogLine) {
    let tenant = identity.tenant.as_str();
    let agent = identity.agent.as_str();
    let invocation = identity.invocation_id.as_str();
    let fields = format!("{:?}", line.fields);
    let message = line.message.as_str();
    macro_rules! at {
        ($level:expr) => {
            tracing::event!(target: "sovra::guest", $level, tenant, agent, invocation, fields, "{message}")
        };
    }
    match line.level {
        LogLevel::Trace => at!(tracing::Level::TRACE),
        LogLevel::Debug => at!(tracing::Level::DEBUG),
        LogLevel::Info => at!(tracing::Level::INFO),
        LogLevel::Warn => at!(tracing::Level::WARN),
        LogLevel::Error => at!(tracing::Level::ERROR),
    }
}
