//! One call of an agent as the host describes it ([`Invocation`]), what it
//! shows while it runs ([`LiveEvent`]) and everything it produced
//! ([`InvocationReport`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sovra_gpu::UsageMeter;

use crate::audit::AuditReceipt;
use crate::capability::Grants;
use crate::error::InvokeError;
use crate::limits::Limits;
use crate::names::TenantId;
use crate::sandbox::LogLine;
use crate::tools::{CallChain, ToolCatalog};

/// One call of an agent, with everything the host decides about it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub tenant: TenantId,
    pub grants: Grants,
    pub limits: Limits,
    pub input: String,
    pub metadata: Vec<(String, String)>,
    /// Where to send events while the agent runs (for streaming callers).
    pub events: Option<EventSink>,
    /// Where the agent's `call-tool` finds the tenant's tools (none: every
    /// tool is `not-found`).
    pub tools: Option<Arc<dyn ToolCatalog>>,
    /// Set by the host on a tool's own invocation: who called it, how deep.
    pub call_chain: Option<CallChain>,
    /// What the tenant may still spend on models (none: no token quota);
    /// charged at each step of every generation, tools' included.
    pub token_budget: Option<Arc<dyn crate::budget::TokenBudget>>,
}

/// Receives an invocation's [`LiveEvent`]s as they happen. Their number is
/// bounded by the invocation's own limits (log lines kept, tokens generated).
pub type EventSink = tokio::sync::mpsc::UnboundedSender<LiveEvent>;

/// Something an agent did that a streaming caller sees at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// A log line the agent wrote (only lines kept for the report).
    Log(LogLine),
    /// Text a model generated for the agent, as the agent receives it.
    Token { model: String, text: String },
}

impl Invocation {
    /// An invocation with no grants and default limits.
    pub fn new(tenant: TenantId, input: impl Into<String>) -> Self {
        Invocation {
            tenant,
            grants: Grants::none(),
            limits: Limits::default(),
            input: input.into(),
            metadata: Vec::new(),
            events: None,
            tools: None,
            call_chain: None,
            token_budget: None,
        }
    }
}

/// What an agent answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResponse {
    pub output: String,
    pub metadata: Vec<(String, String)>,
}

/// Tokens one model computed for one invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelUsage {
    pub model: String,
    pub prompt_tokens: u64,
    pub generated_tokens: u64,
}

/// Sums each generation's meter per model, in model order.
pub(crate) fn usage_by_model(meters: &[(String, Arc<UsageMeter>)]) -> Vec<ModelUsage> {
    let mut by_model: BTreeMap<&str, ModelUsage> = BTreeMap::new();
    for (model, meter) in meters {
        let used = meter.usage();
        let entry = by_model.entry(model).or_insert_with(|| ModelUsage {
            model: model.clone(),
            ..ModelUsage::default()
        });
        entry.prompt_tokens += u64::from(used.prompt_tokens);
        entry.generated_tokens += u64::from(used.generated_tokens);
    }
    by_model.into_values().collect()
}

/// Everything an invocation produced, success or not.
#[derive(Debug)]
pub struct InvocationReport {
    pub invocation_id: String,
    pub result: Result<AgentResponse, InvokeError>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub logs: Vec<LogLine>,
    pub dropped_logs: usize,
    /// Tokens models generated for this invocation (the sum over `usage`).
    pub generated_tokens: u64,
    /// Tokens each model computed for this invocation, however each
    /// generation ended (finished, cancelled, dropped or cut by the deadline).
    pub usage: Vec<ModelUsage>,
    /// Calls to sovra host functions the agent made (a tool's count toward
    /// its caller's budget).
    pub host_calls: u64,
    pub duration: Duration,
    /// Resolves once the invocation's audit record is durable: a caller that
    /// promises the record survives a crash awaits it before answering.
    pub audited: AuditReceipt,
}
