//! `berth exec -t`: a pseudo-terminal allocated inside the container (from its
//! own devpts), its master handed to berth over a socket, and berth's terminal
//! proxied to it in raw mode, window size included. Signals such as Ctrl-C
//! travel as the bytes they are, and the container's line discipline turns them
//! into signals for its foreground process group.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use nix::sys::termios::{self, SetArg, Termios};

/// Inside the container: open a pty, send its master to `to`, and make its slave
/// this process's controlling terminal and stdio.
pub fn attach_inside(to: &UnixStream) -> Result<(), String> {
    let master = nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
        .map_err(|e| format!("open /dev/ptmx: {e}"))?;
    nix::pty::grantpt(&master).map_err(|e| format!("grantpt: {e}"))?;
    nix::pty::unlockpt(&master).map_err(|e| format!("unlockpt: {e}"))?;
    let name = nix::pty::ptsname_r(&master).map_err(|e| format!("ptsname: {e}"))?;
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&name)
        .map_err(|e| format!("open {name}: {e}"))?;
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        to.as_raw_fd(),
        &[IoSlice::new(b"m")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(|e| format!("hand over the terminal: {e}"))?;
    drop(master);
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    // SAFETY: TIOCSCTTY on a terminal fd this process owns, argument 0.
    if unsafe { nix::libc::ioctl(slave.as_raw_fd(), nix::libc::TIOCSCTTY, 0) } < 0 {
        return Err(format!(
            "make {name} the controlling terminal: {}",
            std::io::Error::last_os_error()
        ));
    }
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard fds of this process.
        if unsafe { nix::libc::dup2(slave.as_raw_fd(), fd) } < 0 {
            return Err(format!(
                "redirect stdio: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// In berth: receive the master.
pub fn receive_master(from: &UnixStream) -> Result<OwnedFd, String> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        from.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receive the terminal: {e}"))?;
    for cmsg in msg
        .cmsgs()
        .map_err(|e| format!("receive the terminal: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(fd) = fds.first()
        {
            // SAFETY: the kernel installed this fd for us just now.
            return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    Err("the command ended before its terminal was set up".to_owned())
}

/// Puts berth's terminal back as it was.
struct RawMode {
    saved: Termios,
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

fn window_size(fd: BorrowedFd) -> Option<nix::libc::winsize> {
    let mut size: nix::libc::winsize = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills the struct passed.
    (unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TIOCGWINSZ, &mut size) } == 0)
        .then_some(size)
}

fn same(a: &nix::libc::winsize, b: &nix::libc::winsize) -> bool {
    a.ws_row == b.ws_row && a.ws_col == b.ws_col
}

/// Proxy berth's stdin and stdout to `master` until the command closes it.
pub fn proxy(master: OwnedFd) {
    let stdin = std::io::stdin();
    let _raw = termios::tcgetattr(stdin.as_fd()).ok().map(|saved| {
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode { saved }
    });
    let mut last_size = None;
    let mut buf = [0u8; 8192];
    let mut stdin_open = true;
    loop {
        // Window size: polled, so no signal handler is needed for SIGWINCH.
        if let Some(size) = window_size(stdin.as_fd())
            && !last_size.as_ref().is_some_and(|last| same(last, &size))
        {
            // SAFETY: TIOCSWINSZ reads the struct passed.
            unsafe { nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size) };
            last_size = Some(size);
        }
        let mut fds = vec![nix::poll::PollFd::new(
            master.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if stdin_open {
            fds.push(nix::poll::PollFd::new(
                stdin.as_fd(),
                nix::poll::PollFlags::POLLIN,
            ));
        }
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(250u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready = |fd: &nix::poll::PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (from_master, from_stdin) = (ready(&fds[0]), fds.get(1).is_some_and(ready));
        if from_master {
            match nix::unistd::read(&master, &mut buf) {
                // EIO: every slave is closed, the command is gone.
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = nix::unistd::write(std::io::stdout(), &buf[..n]);
                }
            }
        }
        if from_stdin {
            match nix::unistd::read(&stdin, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => {
                    let _ = nix::unistd::write(&master, &buf[..n]);
                }
            }
        }
    }
}
