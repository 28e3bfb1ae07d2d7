//! Opening the database: sled settings for a small device, the schema check,
//! and setting an unreadable database aside.

use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::record::unix_now;
use crate::{Error, Store};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

const DB_DIR: &str = "state.db";
const SCHEMA_KEY: &[u8] = b"schema_version";
/// Page cache size: the whole database is a few hundred records and events.
const CACHE_BYTES: u64 = 1024 * 1024;
/// How long an open waits for another process to let go of the database's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Why one attempt to open failed.
enum Failure {
    /// The database is unreadable: set it aside and start afresh.
    Corrupt(Error),
    /// Anything else (permissions, a full disk, the lock held by another
    /// process, a foreign schema): report it and leave the database alone.
    Fatal(Error),
}

impl Store {
    /// Opens `<state_dir>/state.db`, creating it if missing. A database that
    /// cannot be read is renamed to `state.db.corrupt-<unix-secs>` (with a
    /// warning) and replaced by an empty one. A database of another schema
    /// version is refused with [`Error::Schema`].
    pub fn open(state_dir: &Path) -> Result<Store, Error> {
        make_state_dir(state_dir)?;
        warn_if_open_to_others(state_dir);
        let path = state_dir.join(DB_DIR);
        make_db_dir(&path)?;
        wait_for_lock(&path);
        let reason = match attempt(&path) {
            Ok(store) => {
                restrict_files(&path)?;
                return Ok(store);
            }
            Err(Failure::Fatal(error)) => return Err(error),
            Err(Failure::Corrupt(reason)) => reason,
        };
        let aside = set_aside(&path)?;
        tracing::warn!(
            db = %path.display(),
            moved_to = %aside.display(),
            %reason,
            "state database is unreadable: moved it aside and starting with an \
             empty one; the daemon rebuilds state from the containers"
        );
        make_db_dir(&path)?;
        let store =
            attempt(&path).map_err(|(Failure::Corrupt(error) | Failure::Fatal(error))| error)?;
        restrict_files(&path)?;
        Ok(store)
    }
}

/// Create the state dir (and what is missing above it) as 0700: it holds the API
/// socket and every container's files, and only root may look in.
fn make_state_dir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            context: "creating state directory",
            path: dir.to_owned(),
            source,
        })
}

/// Create the database directory as 0700 before sled fills it, and tighten one an
/// older berth made 0755. Anything else in its place is left for sled to refuse
/// (and so to be set aside).
fn make_db_dir(db: &Path) -> Result<(), Error> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |source| Error::Io {
        context: "creating the database directory",
        path: db.to_owned(),
        source,
    };
    match std::fs::DirBuilder::new().mode(0o700).create(db) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(db).is_ok_and(|m| m.is_dir()) {
                std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
            }
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

/// A state dir the operator made readable or writable by others is left as it
/// is (o+x is needed for user namespaces), but said.
fn warn_if_open_to_others(state_dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(state_dir)
        && meta.permissions().mode() & 0o066 != 0
    {
        tracing::warn!(
            state_dir = %state_dir.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the state directory is readable or writable by group or others; chmod 0700 (or 0711 for user namespaces)"
        );
    }
}

/// sled makes its files with the process's umask (0644 as a rule): make every
/// file under the database 0600 and every directory 0700. Files sled makes later
/// sit inside the 0700 directory.
fn restrict_files(db: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let entries = std::fs::read_dir(db).map_err(|source| Error::Io {
        context: "listing the database directory",
        path: db.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        let mode = if kind.is_dir() {
            restrict_files(&path)?;
            0o700
        } else if kind.is_file() {
            0o600
        } else {
            continue;
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(
            |source| Error::Io {
                context: "restricting the permissions of",
                path: path.clone(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Wait (up to [`LOCK_WAIT`]) until nobody holds sled's lock on the database. A
/// daemon killed with SIGKILL a moment ago may have left it to a child it had just
/// forked: an flock goes with the fork until the child execs. sled itself gives up
/// at once, and says so only in an error's text. Any other trouble is left to sled
/// to report.
fn wait_for_lock(path: &Path) {
    use nix::fcntl::{Flock, FlockArg};
    let Ok(file) = std::fs::File::open(path.join("db")) else {
        return;
    };
    let deadline = Instant::now() + LOCK_WAIT;
    let mut file = file;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Unlocked again when dropped, for sled to take.
            Ok(_free) => return,
            Err((held, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = held;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(_) => return,
        }
    }
}

fn attempt(path: &Path) -> Result<Store, Failure> {
    // sled asserts on some damage it finds during recovery; a panic there
    // means the same as an error: the database cannot be read.
    let opened = panic::catch_unwind(AssertUnwindSafe(|| open_trees(path)));
    let store = match opened {
        Ok(Ok(store)) => store,
        Ok(Err(error)) => return Err(classify(error)),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            return Err(Failure::Corrupt(Error::Sled {
                path: path.to_owned(),
                context: "opening".to_owned(),
                source: sled::Error::ReportableBug(format!("sled panicked: {message}")),
            }));
        }
    };
    check_schema(&store)?;
    Ok(store)
}

fn open_trees(path: &Path) -> Result<Store, Error> {
    let fail = |context: &str| {
        let context = context.to_owned();
        move |source| Error::Sled {
            path: path.to_owned(),
            context,
            source,
        }
    };
    // No background flusher: sled's default flushes every 500 ms, so a power
    // cut (routine on edge devices) loses whatever the last interval wrote.
    // Every write that matters calls `flush()` itself, which is durable when
    // it returns, and nothing depends on a timer. A small cache and LowSpace
    // mode keep memory and disk use down on small devices.
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_BYTES)
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(None)
        .open()
        .map_err(fail("opening"))?;
    Ok(Store {
        path: path.to_owned(),
        containers: db
            .open_tree("containers")
            .map_err(fail("opening tree containers"))?,
        events: db
            .open_tree("events")
            .map_err(fail("opening tree events"))?,
        meta: db.open_tree("meta").map_err(fail("opening tree meta"))?,
        db,
        event_writes: Arc::new(Mutex::new(())),
    })
}

/// Damage to the files means corrupt; trouble in the environment does not.
fn classify(error: Error) -> Failure {
    let corrupt = match &error {
        Error::Sled { source, .. } => match source {
            sled::Error::Corruption { .. }
            | sled::Error::Unsupported(_)
            | sled::Error::ReportableBug(_)
            | sled::Error::CollectionNotFound(_) => true,
            sled::Error::Io(io) => matches!(
                io.kind(),
                ErrorKind::NotADirectory
                    | ErrorKind::IsADirectory
                    | ErrorKind::InvalidData
                    | ErrorKind::UnexpectedEof
            ),
        },
        Error::Decode { .. } => true,
        _ => false,
    };
    if corrupt {
        Failure::Corrupt(error)
    } else {
        Failure::Fatal(error)
    }
}

fn check_schema(store: &Store) -> Result<(), Failure> {
    let sled_failure = |context: &str, source| classify(store.sled_error(context, source));
    let stored = store
        .meta
        .get(SCHEMA_KEY)
        .map_err(|e| sled_failure("reading schema version", e))?;
    let Some(bytes) = stored else {
        if !(store.containers.is_empty() && store.events.is_empty()) {
            return Err(Failure::Corrupt(Error::Decode {
                key: "meta/schema_version".to_owned(),
                message: "missing, but the database holds data".to_owned(),
            }));
        }
        store
            .meta
            .insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
            .map_err(|e| sled_failure("writing schema version", e))?;
        return store.flush().map_err(classify);
    };
    let found = <[u8; 8]>::try_from(bytes.as_ref())
        .map(u64::from_be_bytes)
        .map_err(|_| {
            Failure::Corrupt(Error::Decode {
                key: "meta/schema_version".to_owned(),
                message: format!("expected 8 bytes, found {}", bytes.len()),
            })
        })?;
    migrate(store, found).map_err(Failure::Fatal)
}

/// Brings a database of schema `found` up to [`SCHEMA_VERSION`]. There are no
/// migrations yet; a newer schema (from a downgrade) is refused rather than
/// guessed at.
fn migrate(store: &Store, found: u64) -> Result<(), Error> {
    match found {
        SCHEMA_VERSION => Ok(()),
        // e.g. `1 => { rewrite the records; store 2 as schema_version; flush }`
        other => Err(Error::Schema {
            path: store.path.clone(),
            found: other,
            expected: SCHEMA_VERSION,
        }),
    }
}

/// Renames the database to `state.db.corrupt-<unix-secs>` (plus `.N` if that
/// is taken) and returns the new name.
fn set_aside(path: &Path) -> Result<PathBuf, Error> {
    let base = format!("{}.corrupt-{}", path.display(), unix_now());
    let mut aside = PathBuf::from(&base);
    let mut n = 1;
    while aside.symlink_metadata().is_ok() {
        aside = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    std::fs::rename(path, &aside).map_err(|source| Error::Io {
        context: "moving aside the unreadable state database",
        path: path.to_owned(),
        source,
    })?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;

    fn corrupt_copies(state_dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(state_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("state.db.corrupt-")
            })
            .collect()
    }

    #[test]
    fn a_new_state_dir_and_database_are_private_to_root() {
        use std::os::unix::fs::PermissionsExt;
        let top = tempfile::tempdir().unwrap();
        let state = top.path().join("var/lib/berth");
        let store = Store::open(&state).unwrap();
        store.flush().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        let mut seen = 0;
        let mut dirs = vec![state.join(DB_DIR)];
        while let Some(dir) = dirs.pop() {
            assert_eq!(mode(&dir), 0o700, "{}", dir.display());
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    assert_eq!(mode(&path), 0o600, "{}", path.display());
                    seen += 1;
                }
            }
        }
        assert!(seen >= 2, "sled made {seen} files");
    }

    #[test]
    fn a_lock_another_process_lets_go_of_soon_is_waited_for() {
        use nix::fcntl::{Flock, FlockArg};
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        // What a child forked by a just-killed daemon holds until it execs: the
        // same flock sled takes, on another open file description.
        let file = std::fs::File::open(dir.path().join("state.db/db")).unwrap();
        let held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let store = Store::open(dir.path());
        release.join().unwrap();
        assert!(store.is_ok(), "{:?}", store.err());
    }

    #[test]
    fn missing_database_is_created_with_the_schema_version() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("var/lib/berth");
        let store = Store::open(&state_dir).unwrap();
        assert!(state_dir.join("state.db").is_dir());
        let version = store.meta.get(SCHEMA_KEY).unwrap().unwrap();
        assert_eq!(version.as_ref(), &SCHEMA_VERSION.to_be_bytes());
    }

    #[test]
    fn other_schema_version_is_refused_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(&Record::new("web")).unwrap();
            store.meta.insert(SCHEMA_KEY, &7u64.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let err = crate::reopen(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Schema {
                    found: 7,
                    expected: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("version 7"), "{message}");
        assert!(message.contains("version 1"), "{message}");
        // Refused, not destroyed.
        assert!(corrupt_copies(dir.path()).is_empty());
    }

    #[test]
    fn garbage_file_in_place_of_the_database_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.db"), b"\x00garbage\xff").unwrap();

        let store = Store::open(dir.path()).unwrap();
        assert!(store.list().unwrap().is_empty());
        let aside = corrupt_copies(dir.path());
        assert_eq!(aside.len(), 1);
        assert_eq!(std::fs::read(&aside[0]).unwrap(), b"\x00garbage\xff");
        // The fresh database works.
        store.put(&Record::new("web")).unwrap();
        assert!(store.get("web").unwrap().is_some());
    }

    #[test]
    fn database_with_garbage_files_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let db_dir = dir.path().join("state.db");
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(&Record::new("web")).unwrap();
        }
        for entry in std::fs::read_dir(&db_dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                let len = std::fs::metadata(&path).unwrap().len().max(64);
                std::fs::write(&path, vec![0xab; len as usize]).unwrap();
            }
        }

        let store = crate::reopen(dir.path()).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(corrupt_copies(dir.path()).len(), 1);
        assert!(db_dir.is_dir());
    }

    #[test]
    fn data_without_a_schema_version_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put(&Record::new("web")).unwrap();
            store.meta.remove(SCHEMA_KEY).unwrap();
            store.flush().unwrap();
        }
        let store = crate::reopen(dir.path()).unwrap();
        assert!(store.list().unwrap().is_empty());
        assert_eq!(corrupt_copies(dir.path()).len(), 1);
    }

    #[test]
    fn a_second_open_while_held_fails_without_touching_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put(&Record::new("web")).unwrap();

        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, Error::Sled { .. }), "{err:?}");
        assert!(corrupt_copies(dir.path()).is_empty());
        assert!(store.get("web").unwrap().is_some());
    }
}
