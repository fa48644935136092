//! `sovra:agent/safety`: a controller asks for its episode to stop. The
//! request is recorded on the episode's signals; the episode's loop applies
//! the world's safe action and ends the episode once the tick is done.

use std::borrow::Cow;

use crate::bindings::controller::sovra::agent::safety::Host;
use crate::guest_text::escape_controls;
use crate::limits::MAX_LOG_MESSAGE_BYTES;
use crate::sandbox::Sandbox;

impl Host for Sandbox {
    async fn emergency_stop(&mut self, reason: String) -> wasmtime::Result<()> {
        self.charge_host_call()?;
        // Load-time checks keep `safety` to controllers, whose sandboxes
        // always carry signals.
        let Some(signals) = &self.controller else {
            return Err(wasmtime::Error::msg(
                "sovra:agent/safety is only available to controllers",
            ));
        };
        let mut reason = match escape_controls(&reason) {
            Cow::Borrowed(_) => reason,
            Cow::Owned(escaped) => escaped,
        };
        crate::sandbox::truncate_to_char_boundary(&mut reason, MAX_LOG_MESSAGE_BYTES);
        tracing::warn!(
            tenant = %self.identity.tenant,
            controller = %self.identity.agent,
            %reason,
            "controller requested an emergency stop"
        );
        signals.request_emergency_stop(reason);
        Ok(())
    }
}
