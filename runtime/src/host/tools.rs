//! `sovra:agent/tools`: calling the tenant's tool plugins.
//!
//! The order of checks is fixed: the tenant's grant first (a tool not
//! granted to this agent is `access-denied` whether or not it is installed),
//! then the call limits (depth, count), then the catalog (`not-found` when
//! the tenant has no such tool), then the input against the tool's schema.
//! Only then does the tool run, in a sandbox of its own under its own
//! install's grants, within [`TOOL_TIME_SHARE_PERCENT`] of what is left of
//! this invocation's deadline and within its host-call budget; the host
//! calls it makes are charged to this invocation.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bindings::sovra::agent::tools::Host;
use crate::bindings::{GuestError, ToolInfo};
use crate::error::{AgentError, InvokeError};
use crate::host::HostError;
use crate::invocation::Invocation;
use crate::limits::{Limits, MAX_TOOL_CALLS, MAX_TOOL_DEPTH, TOOL_TIME_SHARE_PERCENT};
use crate::manifest::World;
use crate::outcome::guest_error;
use crate::sandbox::Sandbox;
use crate::tools::{CallChain, DescribedTool, InstalledTool};

/// Less time than this left for a tool is no time: the call is refused.
const MIN_TOOL_TIME: Duration = Duration::from_millis(1);

impl Sandbox {
    /// Tool `name` from the tenant's catalog, if installed.
    async fn installed_tool(&mut self, name: &str) -> Result<InstalledTool, HostError> {
        let not_found = || GuestError::NotFound(format!("the tenant has no tool `{name}`"));
        let Some(catalog) = self.tools.catalog.clone() else {
            return Err(not_found().into());
        };
        let tenant = self.identity.tenant.clone();
        let turns = Arc::clone(&self.turns);
        match turns.away(catalog.tool(&tenant, name)).await {
            Ok(Some(tool)) if tool.agent.manifest().world == World::Tool => Ok(tool),
            Ok(Some(_)) => Err(GuestError::NotFound(format!(
                "the tenant's `{name}` is an agent, not a tool"
            ))
            .into()),
            Ok(None) => Err(not_found().into()),
            Err(reason) => {
                tracing::warn!(tool = name, %reason, "cannot look the tool up");
                // An agent that passes this on is not at fault.
                self.host_unavailable = true;
                Err(GuestError::Unavailable(format!("tool `{name}` cannot be loaded now")).into())
            }
        }
    }

    /// How `tool` describes itself (asked once per component).
    fn described(
        &self,
        tool: &InstalledTool,
    ) -> impl Future<Output = Result<Arc<DescribedTool>, String>> + Send + 'static {
        let runtime = self.tools.runtime.clone();
        let tenant = self.identity.tenant.clone();
        let turns = Arc::clone(&self.turns);
        let agent = Arc::clone(&tool.agent);
        async move { turns.away(runtime.describe_tool(&agent, &tenant)).await }
    }
}

impl Host for Sandbox {
    async fn list_tools(&mut self) -> wasmtime::Result<Vec<ToolInfo>> {
        self.charge_host_call()?;
        let granted: Vec<String> = self.inference.grants.tools.iter().cloned().collect();
        let mut tools = Vec::new();
        for name in granted {
            let Ok(tool) = self.installed_tool(&name).await else {
                continue;
            };
            match self.described(&tool).await {
                Ok(described) => tools.push(ToolInfo {
                    name,
                    description: described.description.clone(),
                    input_schema: described.input_schema.clone(),
                }),
                Err(reason) => tracing::warn!(tool = %name, %reason, "tool left out of the list"),
            }
        }
        Ok(tools)
    }

    async fn call_tool(&mut self, name: String, input: String) -> Result<String, HostError> {
        self.charge_host_call()?;
        if !self.inference.grants.allows_tool(&name) {
            return Err(HostError::ToolNotAllowed(name));
        }
        if self.tools.depth >= MAX_TOOL_DEPTH {
            return Err(GuestError::LimitExceeded(format!(
                "tool calls nest at most {MAX_TOOL_DEPTH} deep"
            ))
            .into());
        }
        if self.tools.calls >= MAX_TOOL_CALLS {
            return Err(GuestError::LimitExceeded(format!(
                "an invocation makes at most {MAX_TOOL_CALLS} tool calls"
            ))
            .into());
        }
        self.tools.calls += 1;
        let tool = self.installed_tool(&name).await?;
        let described = self
            .described(&tool)
            .await
            .map_err(|reason| GuestError::Unavailable(format!("tool `{name}`: {reason}")))?;
        described
            .check_input(&input)
            .map_err(GuestError::InvalidInput)?;
        let left = self
            .inference
            .deadline
            .saturating_duration_since(Instant::now())
            * TOOL_TIME_SHARE_PERCENT
            / 100;
        if left < MIN_TOOL_TIME {
            return Err(GuestError::LimitExceeded(format!(
                "no time is left to call tool `{name}`"
            ))
            .into());
        }
        let mut invocation = Invocation::new(self.identity.tenant.clone(), input);
        invocation.token_budget = self.inference.budget.clone();
        invocation.grants = tool.grants;
        invocation.limits = Limits {
            timeout: tool.limits.timeout.min(left),
            max_memory: tool.limits.max_memory,
        };
        invocation.tools = self.tools.catalog.clone();
        invocation.call_chain = Some(CallChain {
            parent: self.identity.invocation_id.clone(),
            depth: self.tools.depth + 1,
            host_calls_left: self.host_call_limit.saturating_sub(self.host_calls),
        });
        let runtime = self.tools.runtime.clone();
        let turns = Arc::clone(&self.turns);
        let report = turns.away(runtime.invoke(&tool.agent, invocation)).await;
        // One budget for the whole chain: what the tool used is spent here.
        self.host_calls = self.host_calls.saturating_add(report.host_calls);
        report
            .result
            .map(|response| response.output)
            .map_err(|error| tool_failure(&name, error).into())
    }
}

/// What an agent sees of its tool's failure: the tool's own error as the
/// tool gave it, the sandbox's verdict (deadline, memory, trap) as what it
/// is to the caller.
fn tool_failure(name: &str, error: InvokeError) -> GuestError {
    match error {
        InvokeError::Agent(AgentError { kind, message }) => {
            guest_error(kind, format!("tool `{name}`: {message}"))
        }
        InvokeError::Timeout { .. } => {
            GuestError::LimitExceeded(format!("tool `{name}` ran out of time: {error}"))
        }
        InvokeError::HostCallLimit { .. } => {
            GuestError::LimitExceeded(format!("tool `{name}`: {error}"))
        }
        InvokeError::NotGranted { .. } => {
            GuestError::AccessDenied(format!("tool `{name}` cannot run: {error}"))
        }
        InvokeError::Unavailable(_) => GuestError::Unavailable(format!("tool `{name}`: {error}")),
        other => GuestError::Internal(format!("tool `{name}` failed: {other}")),
    }
}
