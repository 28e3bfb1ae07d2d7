//! A reader between the decompressor and the tar crate that refuses an archive
//! whose GNU long name or PAX extended header is huge. The tar crate reads those
//! payloads whole into memory before the entry they describe: a 1.2 MB gzipped
//! layer that declares a 256 MiB long name made the unpacker hold 277 MB, and one
//! that declares 8 GiB would take a device's memory. Nothing else is changed:
//! every byte passes through as read.

use std::io::{self, Read};

/// More than any path (PATH_MAX is 4096) or set of xattrs an image needs.
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

#[derive(Debug)]
pub struct TarGuard<R> {
    inner: R,
    /// Bytes of entry data (padded to blocks) before the next header.
    skip: u64,
    /// The header being gathered, and how much of it is in.
    header: [u8; BLOCK],
    filled: usize,
    /// The next block is a GNU sparse extension, not a header.
    sparse_extension: bool,
}

impl<R> TarGuard<R> {
    pub fn new(inner: R) -> TarGuard<R> {
        TarGuard {
            inner,
            skip: 0,
            header: [0; BLOCK],
            filled: 0,
            sparse_extension: false,
        }
    }

    /// Follow the block structure over `bytes`, which just passed through.
    fn watch(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = usize::try_from(self.skip)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.skip -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (BLOCK - self.filled).min(bytes.len());
            self.header[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
            self.filled += n;
            bytes = &bytes[n..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.block()?;
            }
        }
        Ok(())
    }

    /// A whole block where a header (or a sparse extension) stands.
    fn block(&mut self) -> io::Result<()> {
        let block = &self.header;
        if self.sparse_extension {
            // An old GNU sparse extension block: 21 entries, then "more follow".
            self.sparse_extension = block[504] != 0;
            return Ok(());
        }
        if block.iter().all(|b| *b == 0) {
            return Ok(()); // the end-of-archive blocks
        }
        let kind = block[156];
        let size = entry_size(&block[124..136]);
        if matches!(kind, b'L' | b'K' | b'x' | b'g') && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {} of {size} bytes; berth reads at most {MAX_EXTENSION}",
                    match kind {
                        b'L' => "GNU long name",
                        b'K' => "GNU long link name",
                        _ => "PAX extended header",
                    }
                ),
            ));
        }
        self.sparse_extension = kind == b'S' && block[482] != 0;
        self.skip = size.div_ceil(BLOCK as u64).saturating_mul(BLOCK as u64);
        Ok(())
    }
}

/// The size field: octal digits, or GNU's base-256 (high bit set). Unreadable
/// is 0 here; the tar crate then refuses the header itself.
fn entry_size(field: &[u8]) -> u64 {
    if field[0] & 0x80 != 0 {
        return field[1..].iter().fold(u64::from(field[0] & 0x7f), |n, b| {
            n.saturating_mul(256).saturating_add(u64::from(*b))
        });
    }
    let digits: String = field
        .iter()
        .map(|b| *b as char)
        .skip_while(|c| *c == ' ')
        .take_while(char::is_ascii_digit)
        .collect();
    u64::from_str_radix(&digits, 8).unwrap_or(0)
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.watch(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_cksum();
        header.as_bytes().to_vec()
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // Small reads, so that headers arrive in pieces.
        let mut guard = TarGuard::new(io::BufReader::with_capacity(7, bytes));
        let mut buf = [0u8; 100];
        loop {
            match guard.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    #[test]
    fn a_huge_long_name_is_refused_at_its_header() {
        for kind in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
            let mut archive = header(tar::EntryType::Regular, 1000);
            archive.extend_from_slice(&[b'x'; 1024]);
            archive.extend_from_slice(&header(kind, 8 << 30));
            let err = read_all(&archive).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert!(err.to_string().contains("of 8589934592 bytes"), "{err}");
        }
    }

    #[test]
    fn ordinary_archives_pass_through_unchanged() {
        let mut archive = header(tar::EntryType::GNULongName, 300);
        archive.extend_from_slice(&[b'n'; 512]);
        // A file of 1 MiB + 1 whose data looks like a huge long-name header.
        archive.extend_from_slice(&header(tar::EntryType::Regular, (1 << 20) + 1));
        let mut data = header(tar::EntryType::GNULongName, 8 << 30);
        data.resize((1 << 20) + 512, 0);
        archive.extend_from_slice(&data);
        archive.extend_from_slice(&[0; 1024]);
        assert_eq!(read_all(&archive).unwrap(), archive);
    }

    #[test]
    fn sizes_are_read_in_octal_and_base_256() {
        assert_eq!(entry_size(b"00000001000\0"), 512);
        assert_eq!(entry_size(b"     777 \0\0\0"), 511);
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 2;
        big[10] = 1;
        assert_eq!(entry_size(&big), 258);
    }
}
