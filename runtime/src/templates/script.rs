//! `template: {script: PATH, args: [...]}`: an LXC-style template script, called
//! as `SCRIPT --path DIR --name NAME --rootfs ROOTFS ARGS...` with a clean
//! environment. Its output goes to `template.log` in the container directory.
//! It runs in the cgroup `PARENT/NAME/create`, emptied with SIGKILL when it
//! ends, so nothing it forks outlives the create.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use berth_manifests::Resources;

use super::Context;
use crate::cgroup::Cgroups;
use crate::error::{Error, Result, io};

const LOG_TAIL_LINES: usize = 8;

pub fn run(ctx: &Context, script: &Path, args: &[String]) -> Result<()> {
    let cgroups = Cgroups::new(ctx.cgroup_parent, ctx.name, &Resources::default())?;
    let procs = cgroups.make_create()?;
    let outcome = run_in(ctx, script, args, &procs);
    // Whatever the script left running (a daemon it started, a child still
    // writing into the rootfs) dies with the create.
    cgroups.kill_create()?;
    outcome
}

fn run_in(ctx: &Context, script: &Path, args: &[String], procs: &Path) -> Result<()> {
    let procs_file = std::fs::OpenOptions::new()
        .write(true)
        .open(procs)
        .map_err(io("open", procs))?;
    let procs_fd = procs_file.as_raw_fd();
    let log = std::fs::File::create(ctx.log).map_err(io("create", ctx.log))?;
    let log_err = log.try_clone().map_err(io("open", ctx.log))?;
    let mut command = Command::new(script);
    command
        .arg("--path")
        .arg(ctx.dir)
        .arg("--name")
        .arg(ctx.name)
        .arg("--rootfs")
        .arg(ctx.rootfs)
        .args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("BERTH_CONTAINER_NAME", ctx.name)
        .env("BERTH_CONTAINER_PATH", ctx.dir)
        .env("BERTH_ROOTFS_PATH", ctx.rootfs)
        .current_dir(ctx.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            // Into the create cgroup before anything can fork: "0" is the writer.
            if nix::libc::write(procs_fd, c"0".as_ptr().cast(), 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // LXC runs templates with umask 022; set it in the child only, since a
            // umask is process-wide and the daemon has other threads.
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
            // If berth dies mid-create, so does the template: a stale `partial` is
            // then cleaned up by `berth gc` without a script still writing into it.
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let status = command.status().map_err(|e| Error::Template {
        template: script.display().to_string(),
        message: format!("cannot run it: {e}"),
    })?;
    let output = std::fs::read_to_string(ctx.log).unwrap_or_default();
    for line in output.lines() {
        tracing::debug!(container = ctx.name, "template: {line}");
    }
    if status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = output.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n  ");
    Err(Error::Template {
        template: script.display().to_string(),
        message: if tail.is_empty() {
            format!("failed ({status}) without output")
        } else {
            format!("failed ({status}); its last output:\n  {tail}")
        },
    })
}
