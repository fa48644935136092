//! Bounded capture of a guest's stdout and stderr.
//!
//! A guest may print; what it prints is kept in memory up to
//! [`MAX_CAPTURED_OUTPUT`](crate::limits::MAX_CAPTURED_OUTPUT) bytes per
//! stream and handed back with the invocation's outcome. A write past the cap
//! traps the guest with [`OutputLimitExceeded`], so an output flood ends with
//! its own error instead of filling the host.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Which captured stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamName {
    Stdout,
    Stderr,
}

impl std::fmt::Display for StreamName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        })
    }
}

/// The trap raised when a guest writes more than its output cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest wrote more than {limit} bytes to {stream}")]
pub struct OutputLimitExceeded {
    pub stream: StreamName,
    pub limit: usize,
}

/// A bounded in-memory sink shared between the sandbox and the host.
#[derive(Debug, Clone)]
pub struct CapturedOutput {
    stream: StreamName,
    limit: usize,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl CapturedOutput {
    pub fn new(stream: StreamName, limit: usize) -> Self {
        CapturedOutput {
            stream,
            limit,
            buffer: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Everything captured so far.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        // A poisoned buffer still holds valid bytes.
        self.buffer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends as much of `bytes` as fits; errors if any byte did not.
    fn append(&self, bytes: &[u8]) -> Result<(), OutputLimitExceeded> {
        let mut buffer = self.lock();
        let room = self.limit.saturating_sub(buffer.len());
        buffer.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if bytes.len() > room {
            return Err(OutputLimitExceeded {
                stream: self.stream,
                limit: self.limit,
            });
        }
        Ok(())
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes)
            .map_err(|exceeded| StreamError::Trap(wasmtime::Error::new(exceeded)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a write so that an overflow traps with a clear error
        // instead of the guest seeing a closed stream and panicking.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.append(buf)
                .map(|()| buf.len())
                .map_err(|exceeded| std::io::Error::new(std::io::ErrorKind::StorageFull, exceeded)),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_reports_the_overflow() {
        let output = CapturedOutput::new(StreamName::Stdout, 8);
        output.append(b"12345").unwrap();
        let err = output.append(b"6789").unwrap_err();
        assert_eq!(
            err,
            OutputLimitExceeded {
                stream: StreamName::Stdout,
                limit: 8
            }
        );
        assert_eq!(output.contents(), b"12345678");
    }
}
