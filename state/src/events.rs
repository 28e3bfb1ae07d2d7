//! Events: what happened to a container, kept in two bounded rings in the
//! `events` tree. A container's ring lives under `name 0x00 seq`, the global
//! ring under `0xff seq` (sequence numbers big-endian, so key order is
//! time order). Both hold a copy of the event; trimming happens on insert.
//!
//! An event with the same reason and message as the container's newest one
//! folds into it, like a Kubernetes event series: the count goes up,
//! `last_seen` moves, `first_seen` stays, and the event takes a new sequence
//! number so it becomes the newest in both rings and `events_since` streams
//! the update.

use serde::{Deserialize, Serialize};
use sled::IVec;

use crate::record::unix_now;
use crate::{Error, Store, check_name};

/// Events kept per container.
pub(crate) const RING_PER_CONTAINER: usize = 100;
/// Events kept in the global ring.
pub(crate) const RING_GLOBAL: usize = 1000;
/// First byte of global-ring keys; never the first byte of a UTF-8 name.
const GLOBAL: u8 = 0xff;

/// Something that happened to a container, possibly several times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Global, increasing; a folded event gets a new one.
    pub seq: u64,
    pub name: String,
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub first_seen: u64,
    pub last_seen: u64,
}

impl Store {
    /// Records an event for `name`, folding it into the container's newest
    /// event if reason and message match, trims both rings, and flushes.
    pub fn record_event(&self, name: &str, reason: &str, message: &str) -> Result<Event, Error> {
        check_name(name)?;
        // Poisoning cannot leave `()` inconsistent.
        let _writing = self
            .event_writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = unix_now();
        let mut ring = self.ring_keys(&ring_prefix(name))?;
        let mut global = self.ring_keys(&[GLOBAL])?;
        let mut batch = sled::Batch::default();

        let newest = match ring.last() {
            Some(key) => self.read_event(key)?,
            None => None,
        };
        let seq = self
            .db
            .generate_id()
            .map_err(|e| self.sled_error("generating an event sequence number", e))?
            // generate_id starts at 0; seq 0 is kept for "before everything".
            .saturating_add(1);
        let event = match newest {
            Some(prev) if prev.reason == reason && prev.message == message => {
                if let Some(key) = ring.pop() {
                    batch.remove(key);
                }
                let prev_global = global_key(prev.seq);
                global.retain(|key| key.as_ref() != prev_global.as_slice());
                batch.remove(&prev_global);
                Event {
                    seq,
                    count: prev.count.saturating_add(1),
                    last_seen: now,
                    ..prev
                }
            }
            _ => Event {
                seq,
                name: name.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                count: 1,
                first_seen: now,
                last_seen: now,
            },
        };
        for key in oldest_beyond(&ring, RING_PER_CONTAINER) {
            batch.remove(key.clone());
        }
        for key in oldest_beyond(&global, RING_GLOBAL) {
            batch.remove(key.clone());
        }
        let value = serde_json::to_vec(&event).map_err(|e| Error::Encode {
            key: format!("event {seq} of {name}"),
            message: e.to_string(),
        })?;
        batch.insert(event_key(name, seq), value.clone());
        batch.insert(global_key(seq).to_vec(), value);
        self.events
            .apply_batch(batch)
            .map_err(|e| self.sled_error(format!("recording an event for {name}"), e))?;
        self.flush()?;
        Ok(event)
    }

    /// The newest `limit` events, oldest first: of container `name`, or of
    /// all containers (the global ring) for `None`. Undecodable events are
    /// skipped with a warning.
    pub fn events(&self, name: Option<&str>, limit: usize) -> Result<Vec<Event>, Error> {
        let prefix = match name {
            Some(name) => {
                check_name(name)?;
                ring_prefix(name)
            }
            None => vec![GLOBAL],
        };
        let mut events = Vec::new();
        for entry in self.events.scan_prefix(&prefix).rev() {
            if events.len() == limit {
                break;
            }
            let (key, value) = entry.map_err(|e| self.sled_error("reading events", e))?;
            events.extend(decode_event(&key, &value));
        }
        events.reverse();
        Ok(events)
    }

    /// Events of the global ring with a sequence number above `seq`, oldest
    /// first: pass the last `seq` seen to stream. 0 returns the whole ring.
    pub fn events_since(&self, seq: u64) -> Result<Vec<Event>, Error> {
        let Some(next) = seq.checked_add(1) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        // Every key from 0xff onwards is in the global ring.
        for entry in self.events.range(global_key(next)..) {
            let (key, value) = entry.map_err(|e| self.sled_error("reading events", e))?;
            events.extend(decode_event(&key, &value));
        }
        Ok(events)
    }

    /// Drops the ring of one container (the global ring keeps its events).
    pub(crate) fn drop_event_ring(&self, name: &str) -> Result<(), Error> {
        if check_name(name).is_err() {
            return Ok(()); // no such ring can exist
        }
        let _writing = self
            .event_writes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut batch = sled::Batch::default();
        for key in self.ring_keys(&ring_prefix(name))? {
            batch.remove(key);
        }
        self.events
            .apply_batch(batch)
            .map_err(|e| self.sled_error(format!("removing the events of {name}"), e))
    }

    /// Keys of one ring, oldest first.
    fn ring_keys(&self, prefix: &[u8]) -> Result<Vec<IVec>, Error> {
        self.events
            .scan_prefix(prefix)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| self.sled_error("reading events", e))
    }

    fn read_event(&self, key: &[u8]) -> Result<Option<Event>, Error> {
        let value = self
            .events
            .get(key)
            .map_err(|e| self.sled_error("reading events", e))?;
        Ok(value.and_then(|value| decode_event(key, &value)))
    }
}

fn ring_prefix(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 9);
    key.extend_from_slice(name.as_bytes());
    key.push(0);
    key
}

fn event_key(name: &str, seq: u64) -> Vec<u8> {
    let mut key = ring_prefix(name);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

fn global_key(seq: u64) -> [u8; 9] {
    let mut key = [GLOBAL; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The oldest keys that must go so that one more fits within `capacity`.
fn oldest_beyond(keys: &[IVec], capacity: usize) -> &[IVec] {
    let excess = (keys.len() + 1).saturating_sub(capacity);
    &keys[..excess.min(keys.len())]
}

fn decode_event(key: &[u8], value: &[u8]) -> Option<Event> {
    crate::decode(key, value, "event")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn repeated_identical_events_fold_into_one() {
        let (_dir, store) = store();
        let first = store
            .record_event("web", "BackOff", "restarting in 10s")
            .unwrap();
        store
            .record_event("web", "BackOff", "restarting in 10s")
            .unwrap();
        let third = store
            .record_event("web", "BackOff", "restarting in 10s")
            .unwrap();

        assert_eq!(third.count, 3);
        assert_eq!(third.first_seen, first.first_seen);
        assert!(third.seq > first.seq);
        assert_eq!(store.events(Some("web"), 10).unwrap(), vec![third.clone()]);
        assert_eq!(store.events(None, 10).unwrap(), vec![third.clone()]);

        // Only the newest event folds: after another reason, a repeat is new.
        store.record_event("web", "Started", "init pid 7").unwrap();
        let again = store
            .record_event("web", "BackOff", "restarting in 10s")
            .unwrap();
        assert_eq!(again.count, 1);
        // Another container's identical event does not fold either.
        let other = store
            .record_event("db", "BackOff", "restarting in 10s")
            .unwrap();
        assert_eq!(other.count, 1);
        assert_eq!(store.events(Some("web"), 10).unwrap().len(), 3);
        assert_eq!(store.events(None, 10).unwrap().len(), 4);
    }

    #[test]
    fn container_ring_keeps_the_newest_100() {
        let (_dir, store) = store();
        for i in 0..150 {
            store
                .record_event("web", "Tick", &format!("tick {i}"))
                .unwrap();
        }
        store.record_event("db", "Tick", "other ring").unwrap();

        let events = store.events(Some("web"), usize::MAX).unwrap();
        assert_eq!(events.len(), RING_PER_CONTAINER);
        assert_eq!(events[0].message, "tick 50");
        assert_eq!(events[99].message, "tick 149");
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(store.events(Some("db"), usize::MAX).unwrap().len(), 1);
        // `limit` takes the newest, still oldest first.
        let last3: Vec<_> = store
            .events(Some("web"), 3)
            .unwrap()
            .into_iter()
            .map(|e| e.message)
            .collect();
        assert_eq!(last3, ["tick 147", "tick 148", "tick 149"]);
    }

    #[test]
    fn global_ring_keeps_the_newest_1000() {
        let (_dir, store) = store();
        for i in 0..1100 {
            let name = format!("c{}", i % 20);
            store
                .record_event(&name, "Tick", &format!("tick {i}"))
                .unwrap();
        }
        let global = store.events(None, usize::MAX).unwrap();
        assert_eq!(global.len(), RING_GLOBAL);
        assert_eq!(global[0].message, "tick 100");
        assert_eq!(global[999].message, "tick 1099");
        // Container rings are trimmed on their own: 55 each, all kept.
        assert_eq!(store.events(Some("c0"), usize::MAX).unwrap().len(), 55);
    }

    #[test]
    fn events_since_returns_only_newer_events() {
        let (_dir, store) = store();
        let seqs: Vec<u64> = (0..5)
            .map(|i| {
                store
                    .record_event("web", "Tick", &format!("{i}"))
                    .unwrap()
                    .seq
            })
            .collect();
        assert_eq!(store.events_since(0).unwrap().len(), 5);
        let newer: Vec<_> = store
            .events_since(seqs[2])
            .unwrap()
            .into_iter()
            .map(|e| e.seq)
            .collect();
        assert_eq!(newer, &seqs[3..]);
        assert!(store.events_since(seqs[4]).unwrap().is_empty());
        assert!(store.events_since(u64::MAX).unwrap().is_empty());

        // A fold shows up in the stream as a newer event.
        let folded = store.record_event("web", "Tick", "4").unwrap();
        assert_eq!(store.events_since(seqs[4]).unwrap(), vec![folded]);
    }

    #[test]
    fn remove_drops_the_container_ring_but_not_the_global_one() {
        let (_dir, store) = store();
        store.record_event("web", "Started", "init pid 7").unwrap();
        store
            .record_event("web-2", "Started", "init pid 8")
            .unwrap();
        store.remove("web").unwrap();
        assert!(store.events(Some("web"), 10).unwrap().is_empty());
        assert_eq!(store.events(Some("web-2"), 10).unwrap().len(), 1);
        assert_eq!(store.events(None, 10).unwrap().len(), 2);
    }
}
