//! Admission of long-lived `GET /events` streams: a cap of their own, below the
//! connection cap, and a share per client, so that subscribers who never read cannot
//! take the slots short requests (`/health`, execute) need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dynplug_core::locks::lock;

/// Who holds a stream, for the per-client share: a token's identity, or the address of
/// a client of an API without tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StreamClient {
    /// A token (its digest).
    Token(u64),
    /// An address.
    Address(std::net::IpAddr),
    /// Neither is known (a request that did not come through the server).
    Unknown,
}

/// The streams open, by client.
#[derive(Debug)]
pub struct EventStreams {
    total: usize,
    per_client: usize,
    open: Mutex<(usize, HashMap<StreamClient, usize>)>,
}

/// One admitted stream; dropping it (the stream ended or its client went) frees its
/// place.
#[derive(Debug)]
pub struct StreamPlace {
    streams: Arc<EventStreams>,
    client: StreamClient,
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// As many streams are open as the server allows.
    Full(usize),
    /// This client holds as many as one client may.
    ClientFull(usize),
}

impl EventStreams {
    /// At most `total` streams (and no more than half of `max_connections`), at most
    /// `per_client` for one client.
    pub fn new(total: usize, per_client: usize, max_connections: usize) -> Arc<Self> {
        Arc::new(EventStreams {
            total: total.min(max_connections / 2).max(1),
            per_client: per_client.max(1),
            open: Mutex::default(),
        })
    }

    /// A place for one more stream of `client`, if the caps allow.
    pub fn admit(self: &Arc<Self>, client: StreamClient) -> Result<StreamPlace, Refusal> {
        let mut open = lock(&self.open);
        if open.0 >= self.total {
            return Err(Refusal::Full(self.total));
        }
        let mine = open.1.entry(client.clone()).or_default();
        if *mine >= self.per_client {
            return Err(Refusal::ClientFull(self.per_client));
        }
        *mine += 1;
        open.0 += 1;
        Ok(StreamPlace {
            streams: Arc::clone(self),
            client,
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = lock(&self.streams.open);
        open.0 = open.0.saturating_sub(1);
        if let Some(mine) = open.1.get_mut(&self.client) {
            *mine = mine.saturating_sub(1);
            if *mine == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_shares_hold_and_places_come_back() {
        let streams = EventStreams::new(3, 2, 100);
        let a = StreamClient::Token(1);
        let b = StreamClient::Token(2);
        let a1 = streams.admit(a.clone()).unwrap();
        let _a2 = streams.admit(a.clone()).unwrap();
        assert_eq!(
            streams.admit(a.clone()).unwrap_err(),
            Refusal::ClientFull(2)
        );
        let _b1 = streams.admit(b.clone()).unwrap();
        assert_eq!(streams.admit(b.clone()).unwrap_err(), Refusal::Full(3));
        drop(a1);
        assert!(streams.admit(b).is_ok());
        // Never more than half the connections.
        let small = EventStreams::new(32, 4, 10);
        for i in 0..5 {
            small
                .admit(StreamClient::Token(i))
                .map(std::mem::forget)
                .unwrap();
        }
        assert_eq!(
            small.admit(StreamClient::Token(9)).unwrap_err(),
            Refusal::Full(5)
        );
    }
}
