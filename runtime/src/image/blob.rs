//! Content-addressed blobs: written under a temp name, hashed and counted while
//! they stream in, and renamed into `blobs/sha256/<hex>` only once their digest
//! and size are the ones asked for. Nothing is ever read from `tmp/`.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result, io};

/// The hex of a `sha256:<64 lower-case hex>` digest, or an error naming it. Only
/// such digests become paths in the store.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| {
            hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .ok_or_else(|| Error::Blob {
            digest: digest.to_owned(),
            message: "not a sha256:<64 hex> digest (the only kind berth stores)".to_owned(),
        })
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    hex_digest(Sha256::digest(bytes).as_slice())
}

fn hex_digest(hash: &[u8]) -> String {
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A unique name in `tmp/`: the pid, the time and a counter.
pub(crate) fn temp_name(tmp: &Path, kind: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp.join(format!("{kind}-{}-{nanos:x}-{n}", std::process::id()))
}

/// Streams one blob into the store. `commit` checks it and puts it in place;
/// dropped without a commit (an error, a cancelled pull), it leaves nothing.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
    digest: String,
    expected_size: u64,
    written: u64,
    hasher: Sha256,
}

impl BlobWriter {
    pub(crate) fn create(
        tmp_dir: &Path,
        dest: PathBuf,
        digest: &str,
        expected_size: u64,
    ) -> Result<BlobWriter> {
        let tmp = temp_name(tmp_dir, "blob");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            dest,
            digest: digest.to_owned(),
            expected_size,
            written: 0,
            hasher: Sha256::new(),
        })
    }

    /// The digest this blob must have.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Verify, fsync, rename into place, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take();
        if self.written != self.expected_size {
            return Err(self.mismatch(format!(
                "size mismatch: {} bytes arrived, its descriptor says {}",
                self.written, self.expected_size
            )));
        }
        let actual = hex_digest(self.hasher.clone().finalize().as_slice());
        if actual != self.digest {
            return Err(self.mismatch(format!(
                "digest mismatch: the content hashes to {actual}; the registry's copy is corrupt or was changed"
            )));
        }
        if let Some(file) = file {
            file.sync_all().map_err(io("fsync", &self.tmp))?;
        }
        std::fs::rename(&self.tmp, &self.dest).map_err(io("rename", &self.dest))?;
        let dir = self.dest.parent().unwrap_or(Path::new("/"));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", dir))
    }

    fn mismatch(&self, message: String) -> Error {
        Error::Blob {
            digest: self.digest.clone(),
            message,
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Refused as soon as it is too long: a registry cannot fill the disk.
        if self.written + buf.len() as u64 > self.expected_size {
            return Err(std::io::Error::other(format!(
                "blob {}: size mismatch: more than the {} bytes its descriptor says",
                self.digest, self.expected_size
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the blob was committed"))?;
        let n = file.write(buf).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "blob {}: cannot write {}: {e}",
                    self.digest,
                    self.tmp.display()
                ),
            )
        })?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a commit the temp name is gone (renamed); otherwise remove it.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn writer(dir: &Path, content: &[u8], size: u64) -> (BlobWriter, PathBuf) {
        let digest = sha256_of(content);
        let dest = dir.join("blob");
        (
            BlobWriter::create(dir, dest.clone(), &digest, size).unwrap(),
            dest,
        )
    }

    #[test]
    fn a_blob_with_its_digest_and_size_is_put_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, dest) = writer(dir.path(), b"hello", 5);
        w.write_all(b"hello").unwrap();
        w.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn wrong_content_or_size_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, dest) = writer(dir.path(), b"hello", 5);
        w.write_all(b"jello").unwrap();
        let e = w.commit().unwrap_err().to_string();
        assert!(e.contains("digest mismatch"), "{e}");
        assert!(
            e.starts_with(&format!("blob {}", sha256_of(b"hello"))),
            "{e}"
        );
        assert!(!dest.exists());

        let (mut w, _) = writer(dir.path(), b"hello", 5);
        assert!(w.write_all(b"hello!").is_err(), "more than the size");
        drop(w);
        let (mut w, _) = writer(dir.path(), b"hello", 5);
        w.write_all(b"hell").unwrap();
        assert!(
            w.commit()
                .unwrap_err()
                .to_string()
                .contains("size mismatch")
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn only_sha256_hex_digests_become_paths() {
        assert!(sha256_hex(&format!("sha256:{}", "a".repeat(64))).is_ok());
        for bad in [
            "sha256:../../etc",
            "sha512:abc",
            &format!("sha256:{}", "A".repeat(64)),
        ] {
            assert!(sha256_hex(bad).is_err(), "{bad}");
        }
    }
}
