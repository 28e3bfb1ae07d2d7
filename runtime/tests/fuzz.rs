//! The stable twins of the fuzz targets `unpack`, `image` (its OCI layout half)
//! and `state` (its status and config half): the bodies of `fuzz/fuzz_targets/`
//! run over their seeds and seeded mutations of them (`fuzz/mutate.rs`).
//!
//! The unpack seeds are archives made here, each a trick an image could play
//! (`..`, absolute names, symlinks and hard links leading out, device nodes,
//! whiteouts of `..`, huge and lying headers); `BERTH_FUZZ_WRITE_SEEDS=1` writes
//! them to `fuzz/seeds/unpack/` for libFuzzer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

#[path = "../../fuzz/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};

/// Names an escape would write; none may exist after an unpack.
const ESCAPE: &str = "berth-fuzz-escape";

fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

/// A ustar header block for `name` (written raw: tar's own setters refuse `..`
/// and absolute names, which is what these seeds are for).
fn header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let old = header.as_old_mut();
    let n = name.len().min(old.name.len());
    old.name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(old.linkname.len());
    old.linkname[..l].copy_from_slice(&link[..l]);
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// One entry of a seed archive: name, type, link target, content.
type Entry<'a> = (&'a [u8], tar::EntryType, &'a [u8], &'a [u8]);

/// An archive of `entries`.
fn archive(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, link, data) in entries {
        out.extend_from_slice(header(name, *kind, data.len() as u64, link).as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn pax(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in records {
        let body = key.len() + value.len() + 3;
        let mut len = body + body.to_string().len();
        if len.to_string().len() + body != len {
            len += 1;
        }
        out.extend_from_slice(format!("{len} {key}=").as_bytes());
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// The tricks, one archive each.
fn unpack_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use tar::EntryType::{
        Block, Char, Directory, Fifo, GNULongName, Link, Regular, Symlink, XHeader,
    };
    let e = ESCAPE.as_bytes();
    let up = [b"../", e].concat();
    let abs = [b"/tmp/", e].concat();
    let long = [b"d/".repeat(60).as_slice(), b"file"].concat();
    let mut seeds = vec![
        (
            "plain",
            archive(&[
                (b"etc/", Directory, b"", b""),
                (b"etc/hostname", Regular, b"", b"fuzz\n"),
                (b"bin", Symlink, b"usr/bin", b""),
                (b"etc/hostname2", Link, b"etc/hostname", b""),
            ]),
        ),
        ("dot-dot", archive(&[(&up, Regular, b"", b"out\n")])),
        ("absolute", archive(&[(&abs, Regular, b"", b"out\n")])),
        (
            "symlink-up-then-through",
            archive(&[
                (b"link", Symlink, b"../../..", b""),
                (&[b"link/", e].concat(), Regular, b"", b"out\n"),
            ]),
        ),
        (
            "symlink-absolute-then-through",
            archive(&[
                (b"abs", Symlink, b"/tmp", b""),
                (&[b"abs/", e].concat(), Regular, b"", b"out\n"),
            ]),
        ),
        (
            "symlink-chain",
            archive(&[
                (b"a", Symlink, b"b", b""),
                (b"b", Symlink, b"c/../..", b""),
                (b"c/", Directory, b"", b""),
                (&[b"a/", e].concat(), Regular, b"", b"out\n"),
            ]),
        ),
        (
            "through-existing-symlinks",
            archive(&[
                (&[b"up/", e].concat(), Regular, b"", b"out\n"),
                (&[b"out/", e].concat(), Regular, b"", b"out\n"),
                (&[b"abs/tmp/", e].concat(), Regular, b"", b"out\n"),
            ]),
        ),
        (
            "hard-links-out",
            archive(&[
                (b"h1", Link, b"../../outside/canary", b""),
                (b"h2", Link, b"/etc/passwd", b""),
                (b"h3", Link, b"out/canary", b""),
                (b"h4", Link, b"up/outside/canary", b""),
            ]),
        ),
        (
            "device-nodes",
            archive(&[
                (b"dev/", Directory, b"", b""),
                (b"dev/null", Char, b"", b""),
                (b"dev/sda", Block, b"", b""),
                (b"dev/fifo", Fifo, b"", b""),
                (b"out", Char, b"", b""),
            ]),
        ),
        (
            "whiteouts",
            archive(&[
                (b".wh.etc", Regular, b"", b""),
                (b"etc/.wh..wh..opq", Regular, b"", b""),
                (b".wh.up", Regular, b"", b""),
                (b".wh..", Regular, b"", b""),
                (b".wh...", Regular, b"", b""),
                (b"up/.wh.outside", Regular, b"", b""),
                (b"out/.wh.canary", Regular, b"", b""),
                (b"abs/tmp/.wh..wh..opq", Regular, b"", b""),
            ]),
        ),
        // Applied, this emptied the rootfs's parent before it was refused.
        (
            "whiteout-dot-dot",
            archive(&[(b".wh...", Regular, b"", b"")]),
        ),
        (
            "gnu-long-name",
            archive(&[
                (
                    b"././@LongLink",
                    GNULongName,
                    b"",
                    &[long.as_slice(), b"\0"].concat(),
                ),
                (b"short", Regular, b"", b"long\n"),
                (
                    b"././@LongLink",
                    GNULongName,
                    b"",
                    &[up.as_slice(), b"\0"].concat(),
                ),
                (b"short2", Regular, b"", b"out\n"),
            ]),
        ),
        (
            "pax-path-and-xattrs",
            archive(&[
                (b"PaxHeaders/x", XHeader, b"", &pax(&[("path", &up)])),
                (b"x", Regular, b"", b"out\n"),
                (
                    b"PaxHeaders/y",
                    XHeader,
                    b"",
                    &pax(&[
                        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                        ("SCHILY.xattr.security.capability", b"\x01\x02"),
                    ]),
                ),
                (b"y/", Directory, b"", b""),
                (
                    b"PaxHeaders/z",
                    XHeader,
                    b"",
                    &pax(&[("linkpath", b"/etc/passwd")]),
                ),
                (b"z", Link, b"", b""),
            ]),
        ),
    ];
    // Headers that lie: a size of 8 GiB with nothing after it, a long name of 1 GiB.
    let mut huge = header(b"huge", Regular, 0, b"").as_bytes().to_vec();
    huge[124..136].copy_from_slice(b"77777777777\0");
    let mut fixed = tar::Header::from_byte_slice(&huge).clone();
    fixed.set_cksum();
    seeds.push(("huge-size", fixed.as_bytes().to_vec()));
    let mut long_name = header(b"././@LongLink", GNULongName, 1 << 30, b"");
    long_name.set_cksum();
    seeds.push((
        "huge-long-name",
        [long_name.as_bytes().as_slice(), &[b'a'; 4096]].concat(),
    ));
    let plain = seeds[0].1.clone();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    seeds.push(("plain-gzip", gz.finish().unwrap()));
    seeds.push(("plain-zstd", zstd::encode_all(plain.as_slice(), 1).unwrap()));
    seeds.push(("empty", Vec::new()));
    seeds
}

fn assert_no_escape() {
    for dir in ["/", "/tmp", "/etc"] {
        let path = Path::new(dir).join(ESCAPE);
        assert!(
            std::fs::symlink_metadata(&path).is_err(),
            "an archive wrote {}",
            path.display()
        );
    }
}

#[test]
fn unpacking_arbitrary_archives_stays_inside_the_rootfs() {
    let seeds = unpack_seeds();
    if std::env::var_os("BERTH_FUZZ_WRITE_SEEDS").is_some() {
        let dir = seeds_dir("unpack");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("{name}.tar")), bytes).unwrap();
        }
    }
    let mut inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, bytes)| bytes).collect();
    inputs.extend(mutate::seed_files(&seeds_dir("unpack")));
    let scratch = tempfile::tempdir().unwrap();
    let dictionary: &[&[u8]] = &[
        b"../",
        b"/",
        b".wh.",
        b".wh..wh..opq",
        b"ustar\0",
        ESCAPE.as_bytes(),
    ];
    mutate::run(
        "unpack",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(400),
        |archive| {
            // Mutated headers mostly fail their checksum: fix it, so the entry is read.
            let mut archive = archive.to_vec();
            for block in archive.chunks_exact_mut(512) {
                if &block[257..262] == b"ustar" {
                    let mut header = tar::Header::from_byte_slice(block).clone();
                    header.set_cksum();
                    block.copy_from_slice(header.as_bytes());
                }
            }
            berth_runtime::fuzz::unpack_archive(&archive, scratch.path());
            assert_no_escape();
        },
    );
}

#[test]
fn arbitrary_image_layouts_are_errors_not_panics() {
    let inputs = mutate::seed_files(&seeds_dir("image"));
    let scratch = tempfile::tempdir().unwrap();
    let dictionary: &[&[u8]] = &[
        b"\"manifests\":[",
        b"\"mediaType\":\"application/vnd.oci.image.index.v1+json\"",
        b"\"digest\":\"sha256:",
        b"\"size\":-1",
        b"\"size\":18446744073709551615",
        b"\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}",
        b"\"Entrypoint\":[",
    ];
    mutate::run(
        "image",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(300),
        |bytes| {
            berth_runtime::fuzz::oci_layout(bytes, scratch.path());
        },
    );
}

/// A status.json and a config.json as berth writes them.
fn state_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let manifest = berth_manifests::parse_str(
        Path::new("web.yaml"),
        "apiVersion: berth.dev/v1\nkind: Container\nmetadata: {name: web, labels: {app: web}}\n\
         spec:\n  command: [/bin/sh, -c, 'exec sleep infinity']\n  env: {A: '1'}\n  \
         resources: {memory: 64Mi, pids: 64, cpus: 500m}\n  \
         mounts: [{source: /srv, target: /data, readOnly: true}]\n  \
         network: {mode: bridge, address: 10.88.0.9, ports: [{host: 8080, container: 80}]}\n",
    );
    let container = serde_json::to_value(&manifest.containers[0]).unwrap();
    let status = serde_json::json!({
        "phase": "Running", "monitorPid": 4242, "initPid": 4243, "initStartTime": 123456,
        "startedAt": 1_700_000_000u64, "reboots": 2,
        "lastExit": {"reason": "Signaled", "signal": "SIGKILL", "at": 1_700_000_000u64},
        "error": "none", "hash": container["hash"],
    });
    let config = serde_json::json!({
        "header": {"template": "host", "args": [], "berthVersion": "0.1.0", "origin": "manifest"},
        "container": container, "rootfs": "/var/lib/berth/containers/web/rootfs",
        "hostBinds": ["/usr", "/bin"],
        "image": {"command": ["/bin/sh"], "env": ["PATH=/bin"], "workingDir": "/", "user": "1000:1000"},
    });
    [("status", status), ("config", config)]
        .map(|(name, value)| (name, serde_json::to_vec_pretty(&value).unwrap()))
        .into()
}

#[test]
fn arbitrary_status_and_config_files_are_errors_not_panics() {
    let seeds = state_seeds();
    let scratch = tempfile::tempdir().unwrap();
    // The seeds are what berth reads back, or they would test nothing.
    for (name, bytes) in &seeds {
        let path = scratch.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let read = match *name {
            "status" => berth_runtime::Status::load(&path).map(|_| ()),
            _ => berth_runtime::SavedConfig::load(&path).map(|_| ()),
        };
        read.unwrap_or_else(|e| panic!("the {name} seed does not read: {e}"));
    }
    if std::env::var_os("BERTH_FUZZ_WRITE_SEEDS").is_some() {
        let dir = seeds_dir("state");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("{name}.json")), bytes).unwrap();
        }
    }
    let mut inputs: Vec<Vec<u8>> = seeds.into_iter().map(|(_, bytes)| bytes).collect();
    inputs.extend(mutate::seed_files(&seeds_dir("state")));
    let dictionary: &[&[u8]] = &[
        b"\"phase\":",
        b"\"reboots\":",
        b"null",
        b"-1",
        b"1e999",
        b"{",
        b"[",
    ];
    mutate::run(
        "state",
        &inputs,
        dictionary,
        1 << 16,
        mutate::cases(2000),
        |bytes| {
            berth_runtime::fuzz::status_and_config(bytes, scratch.path());
        },
    );
}
