//! The body of the fuzz target for the state database's values: the libFuzzer
//! target in `fuzz/` calls it (with the runtime's status and config readers),
//! and so does its stable twin in `state/tests/fuzz.rs`.

use crate::{Event, Record};

/// Decode `bytes` as a container record and as an event, as the store does when
/// it reads them back: a damaged value is skipped (`None`), never a panic; and
/// what decodes encodes again, since the store writes back what it read.
pub fn records(bytes: &[u8]) {
    if let Some(record) = crate::decode::<Record>(b"fuzz", bytes, "container record")
        && let Err(e) = serde_json::to_vec(&record)
    {
        panic!("a record read from {bytes:?} does not serialize: {e}");
    }
    if let Some(event) = crate::decode::<Event>(b"fuzz", bytes, "event")
        && let Err(e) = serde_json::to_vec(&event)
    {
        panic!("an event read from {bytes:?} does not serialize: {e}");
    }
}
