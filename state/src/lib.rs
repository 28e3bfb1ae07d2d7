//! berth's record of *actual* state and events, kept in one sled database at
//! `<state-dir>/state.db` that only the daemon opens.
//!
//! Three trees:
//! - `containers`: container name → JSON [`Record`];
//! - `events`: two bounded rings of [`Event`]s, one per container (key: name,
//!   0x00, big-endian sequence number) and one global (key: 0xff, big-endian
//!   sequence number; no UTF-8 name can start with 0xff);
//! - `meta`: `schema_version` (currently [`SCHEMA_VERSION`]).
//!
//! Losing this database is survivable: the daemon rebuilds what it needs from
//! the containers' own status files. So the store never lets a bad database
//! stop the daemon: a database sled cannot open is renamed to
//! `state.db.corrupt-<unix-secs>` and replaced by an empty one, and a record
//! or event that fails to decode is skipped with a warning. Only a database
//! from a different schema version is refused, because it is probably intact
//! and belongs to another berth version.

mod error;
mod events;
/// Entry points for the fuzz targets (`fuzz/`) and their stable twins; not an API.
#[doc(hidden)]
pub mod fuzz;
mod open;
mod record;
mod rollout;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use error::Error;
pub use events::Event;
pub use open::SCHEMA_VERSION;
pub use record::{Condition, Phase, Record, Revision};
pub use rollout::{RolledBack, Rollout};

use record::unix_now;

/// Handle on the state database. Clones share the database.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    db: sled::Db,
    containers: sled::Tree,
    events: sled::Tree,
    meta: sled::Tree,
    /// Serialises event writes: folding and trimming read, then write.
    event_writes: Arc<Mutex<()>>,
}

impl fmt::Debug for Store {
    // sled's own Debug dumps every tree's contents.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The container's record, or `None` if there is none. A record that
    /// fails to decode is reported as `None` with a warning, so the daemon
    /// rebuilds it from the container and the next `put` replaces it.
    pub fn get(&self, name: &str) -> Result<Option<Record>, Error> {
        let value = self
            .containers
            .get(name.as_bytes())
            .map_err(|e| self.sled_error(format!("reading container {name}"), e))?;
        Ok(value.and_then(|bytes| decode_record(name.as_bytes(), &bytes)))
    }

    /// Stores the record with `updated_at` set to now (the caller's copy is
    /// left as it is) and flushes it to disk.
    pub fn put(&self, record: &Record) -> Result<(), Error> {
        check_name(&record.name)?;
        let mut stored = record.clone();
        stored.updated_at = unix_now();
        let bytes = serde_json::to_vec(&stored).map_err(|e| Error::Encode {
            key: format!("container {}", record.name),
            message: e.to_string(),
        })?;
        self.containers
            .insert(record.name.as_bytes(), bytes)
            .map_err(|e| self.sled_error(format!("writing container {}", record.name), e))?;
        self.flush()
    }

    /// Removes the container's record and its own event ring, so names that
    /// come and go over a device's life do not pile up rings. Its events stay
    /// in the global ring until trimmed; an event recorded after `remove`
    /// starts a new ring.
    pub fn remove(&self, name: &str) -> Result<(), Error> {
        self.containers
            .remove(name.as_bytes())
            .map_err(|e| self.sled_error(format!("removing container {name}"), e))?;
        self.drop_event_ring(name)?;
        self.flush()
    }

    /// Every record, sorted by name; undecodable records are skipped with a
    /// warning.
    pub fn list(&self) -> Result<Vec<Record>, Error> {
        let mut records = Vec::new();
        // sled iterates in key order, and byte order is `str` order.
        for entry in self.containers.iter() {
            let (key, value) = entry.map_err(|e| self.sled_error("listing containers", e))?;
            records.extend(decode_record(&key, &value));
        }
        Ok(records)
    }

    /// Writes everything to disk. The store calls this after every write; it
    /// is public for callers that want a barrier of their own.
    pub fn flush(&self) -> Result<(), Error> {
        self.db
            .flush()
            .map(drop)
            .map_err(|e| self.sled_error("flushing", e))
    }

    fn sled_error(&self, context: impl Into<String>, source: sled::Error) -> Error {
        Error::Sled {
            path: self.path.clone(),
            context: context.into(),
            source,
        }
    }
}

/// Names are keys: they must be non-empty and free of NUL, which separates a
/// name from the sequence number in event keys.
fn check_name(name: &str) -> Result<(), Error> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('\0') {
        "it contains a NUL byte"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

fn decode_record(key: &[u8], bytes: &[u8]) -> Option<Record> {
    decode(key, bytes, "container record")
}

/// A value of the database, or `None` with a warning: a damaged entry is skipped
/// and rebuilt, never a reason to stop.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    key: &[u8],
    bytes: &[u8],
    what: &str,
) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            tracing::warn!(
                key = %String::from_utf8_lossy(key),
                %error,
                "skipping an undecodable {what} in the state database"
            );
            None
        }
    }
}

/// Open a database a test has just dropped: sled's background threads may hold its
/// file lock for a moment after the last handle goes (`Store::open` waits for
/// that lock too, up to 5 s; this waits longer, for a loaded test machine).
#[cfg(test)]
pub(crate) fn reopen(dir: &std::path::Path) -> Result<Store, Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    fn full_record(name: &str) -> Record {
        let mut record = Record::new(name);
        let text = "apiVersion: berth.dev/v1\nkind: Container\nmetadata:\n  name: web\nspec:\n  command: [/bin/true]\n";
        let parsed = berth_manifests::parse_str("/etc/berth/manifests/web.yaml".as_ref(), text);
        record.desired = parsed.containers.into_iter().next();
        assert!(record.desired.is_some());
        record.managed = true;
        record.phase = Phase::CrashLoopBackOff;
        record.message = Some("exited with 1".into());
        record.restarts = 3;
        record.conditions = vec![Condition {
            kind: "InvalidManifest".into(),
            message: "spec.command: missing".into(),
            since: 1_700_000_000,
        }];
        record.completed = false;
        record.backoff_until = Some(1_700_000_040);
        record.backoff_delay_secs = Some(40);
        record
    }

    #[test]
    fn record_round_trips_with_updated_at_refreshed() {
        let (_dir, store) = store();
        let mut record = full_record("web");
        record.updated_at = 0;
        store.put(&record).unwrap();

        let back = store.get("web").unwrap().unwrap();
        assert!(back.updated_at > 0);
        record.updated_at = back.updated_at;
        assert_eq!(back, record);
        assert_eq!(store.get("db").unwrap(), None);
    }

    #[test]
    fn list_is_sorted_by_name_and_remove_deletes() {
        let (_dir, store) = store();
        for name in ["web", "api", "db", "cache"] {
            store.put(&Record::new(name)).unwrap();
        }
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["api", "cache", "db", "web"]);

        store.remove("db").unwrap();
        store.remove("never-existed").unwrap();
        assert_eq!(store.get("db").unwrap(), None);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["api", "cache", "web"]);
    }

    #[test]
    fn undecodable_record_is_skipped_not_fatal() {
        let (_dir, store) = store();
        store.put(&Record::new("good")).unwrap();
        store.containers.insert("bad", &b"{not json"[..]).unwrap();

        assert_eq!(store.get("bad").unwrap(), None);
        let names: Vec<_> = store.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["good"]);
        // The next put replaces the bad value.
        store.put(&Record::new("bad")).unwrap();
        assert!(store.get("bad").unwrap().is_some());
    }

    #[test]
    fn names_that_cannot_be_keys_are_rejected() {
        let (_dir, store) = store();
        let err = store.put(&Record::new("")).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{err}");
        let err = store.put(&Record::new("a\0b")).unwrap_err();
        assert!(err.to_string().contains("NUL"), "{err}");
    }

    #[test]
    fn data_survives_close_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let record = full_record("web");
        let last_seq = {
            let store = Store::open(dir.path()).unwrap();
            store.put(&record).unwrap();
            store
                .record_event("web", "Started", "init pid 4242")
                .unwrap();
            store
                .record_event("web", "Started", "init pid 4242")
                .unwrap()
                .seq
        };

        let store = crate::reopen(dir.path()).unwrap();
        let back = store.get("web").unwrap().unwrap();
        assert_eq!(back.desired, record.desired);
        assert_eq!(back.conditions, record.conditions);
        let events = store.events(Some("web"), 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].count, events[0].seq), (2, last_seq));

        // Sequence numbers keep rising across a restart.
        let next = store.record_event("web", "Stopped", "signal 15").unwrap();
        assert!(next.seq > last_seq);
        let since: Vec<_> = store.events_since(last_seq).unwrap();
        assert_eq!(since, vec![next]);
    }
}
