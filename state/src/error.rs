//! The one error type of the state store.

use std::path::PathBuf;

/// Why a state-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled itself failed; `context` says what the store was doing.
    #[error("state database {path}: {context}: {source}")]
    Sled {
        path: PathBuf,
        context: String,
        #[source]
        source: sled::Error,
    },
    /// A stored value could not be read back. The store reports this only
    /// where it cannot skip the value; `get`, `list` and the event readers
    /// skip undecodable values with a warning instead.
    #[error("state database: cannot decode {key}: {message}")]
    Decode { key: String, message: String },
    /// A value could not be serialised (should not happen with these types).
    #[error("state database: cannot encode {key}: {message}")]
    Encode { key: String, message: String },
    /// The database was written with a schema this berth does not know.
    #[error(
        "state database {path} has schema version {found}, but this berth expects \
         version {expected}; it was written by a different berth version \
         (move it aside to start afresh: the daemon rebuilds it from the containers)"
    )]
    Schema {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    /// A file-system operation around the database failed.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The name cannot be used as a key (empty, or contains a NUL byte).
    #[error("invalid container name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
}
