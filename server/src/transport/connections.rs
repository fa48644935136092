//! The node's open connections, counted against a cap below its descriptor
//! budget. Each is idle (waiting for a request: a fresh connection, a
//! keep-alive one between requests, or one dribbling its headers) or busy
//! (a request, or its response body, in flight). At the cap a new connection
//! closes the one idle the longest, so sockets that send nothing cannot lock
//! callers out; only when every connection is busy is the new one refused.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// Every open connection, and the cap.
#[derive(Debug)]
pub struct Connections {
    cap: usize,
    table: Mutex<Table>,
    /// Woken when the last connection closes.
    all_closed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    open: HashMap<u64, Entry>,
}

#[derive(Debug)]
struct Entry {
    /// Requests (with their response bodies) in flight on it.
    busy: usize,
    /// Since when it has had none.
    idle_since: Instant,
    close: Arc<Notify>,
}

/// One admitted connection; dropping it takes it off the table.
#[derive(Debug)]
pub struct ConnectionSlot {
    id: u64,
    connections: Arc<Connections>,
    close: Arc<Notify>,
}

/// Marks a connection busy while held: a request and its response body.
#[derive(Debug)]
pub struct RequestInFlight {
    id: u64,
    connections: Arc<Connections>,
}

impl Connections {
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Connections {
            cap: cap.max(1),
            table: Mutex::new(Table::default()),
            all_closed: Notify::new(),
        })
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a new connection on, closing the longest-idle one at the cap;
    /// `None` when the cap is reached and every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let mut table = self.table();
        if table.open.len() >= self.cap && !Self::close_longest_idle(&mut table) {
            return None;
        }
        let id = table.next_id;
        table.next_id += 1;
        let close = Arc::new(Notify::new());
        table.open.insert(
            id,
            Entry {
                busy: 0,
                idle_since: Instant::now(),
                close: Arc::clone(&close),
            },
        );
        Some(ConnectionSlot {
            id,
            connections: Arc::clone(self),
            close,
        })
    }

    /// Closes the connection idle the longest, if any is idle (the process
    /// ran out of descriptors: make room).
    pub fn close_an_idle_one(&self) -> bool {
        Self::close_longest_idle(&mut self.table())
    }

    fn close_longest_idle(table: &mut Table) -> bool {
        let idle = table
            .open
            .iter()
            .filter(|(_, entry)| entry.busy == 0)
            .min_by_key(|(_, entry)| entry.idle_since)
            .map(|(id, _)| *id);
        let Some(id) = idle else { return false };
        let entry = table.open.remove(&id).expect("found above");
        // A stored permit: the connection's task sees it even if it is not
        // waiting yet.
        entry.close.notify_one();
        true
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table().open.len()
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            if self.open() == 0 {
                return;
            }
            closed.await;
        }
    }

    fn request_started(&self, id: u64) {
        if let Some(entry) = self.table().open.get_mut(&id) {
            entry.busy += 1;
        }
    }

    fn request_ended(&self, id: u64) {
        if let Some(entry) = self.table().open.get_mut(&id) {
            entry.busy = entry.busy.saturating_sub(1);
            if entry.busy == 0 {
                entry.idle_since = Instant::now();
            }
        }
    }
}

impl ConnectionSlot {
    /// Resolves when the node closes this connection to make room.
    pub async fn closed_for_room(&self) {
        self.close.notified().await
    }

    /// Marks the connection busy until the returned guard is dropped.
    pub fn request(&self) -> RequestInFlight {
        self.connections.request_started(self.id);
        RequestInFlight {
            id: self.id,
            connections: Arc::clone(&self.connections),
        }
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut table = self.connections.table();
        table.open.remove(&self.id);
        if table.open.is_empty() {
            self.connections.all_closed.notify_waiters();
        }
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.connections.request_ended(self.id);
    }
}

/// A response body that keeps its connection busy until it is sent (or
/// dropped): a streamed answer is work in flight, not an idle connection.
#[derive(Debug)]
pub struct BusyUntilSent<B> {
    body: B,
    _in_flight: RequestInFlight,
}

impl<B> BusyUntilSent<B> {
    pub fn new(body: B, in_flight: RequestInFlight) -> Self {
        BusyUntilSent {
            body,
            _in_flight: in_flight,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for BusyUntilSent<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_stay() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let busy = second.request();
        // The first is idle: it is closed for the third.
        let third = connections.admit().unwrap();
        assert_eq!(connections.open(), 2);
        let waiter = first.close.clone();
        assert!(
            futures_util::FutureExt::now_or_never(waiter.notified()).is_some(),
            "the idle connection was told to close"
        );
        let _third_busy = third.request();
        // Now both are busy: a fourth is refused.
        assert!(connections.admit().is_none());
        drop(busy);
        // The second is idle again and makes room.
        assert!(connections.admit().is_some());
        drop((first, second, third));
    }

    #[tokio::test]
    async fn all_closed_waits_for_the_last_connection() {
        let connections = Connections::new(4);
        let slot = connections.admit().unwrap();
        let waiter = {
            let connections = Arc::clone(&connections);
            tokio::spawn(async move { connections.all_closed().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(slot);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
