//! The binary upgrade started by the running process itself (SIGUSR2, as nginx), and the
//! systemd notifications that let a `Type=notify` unit follow it.
//!
//! Pingora's upgrade needs two processes: the new one started with `--upgrade`, waiting on
//! `upgrade_sock`, and the old one told (SIGQUIT) to send it the listening sockets. Started
//! by hand, the new process is outside the service manager's control: under systemd it is in
//! another unit, or killed with the old unit's cgroup. Started by the running process, it is in
//! the same unit; with `NotifyAccess=all`, its `MAINPID=` message makes it the unit's main
//! process once it is ready, and the old one exits as an ordinary child of the unit
//! (configs/deploy/galion-edge.service, docs/operations.md "Binary upgrade").
//!
//! [`Upgrader::upgrade`] starts the command, waits until it listens on `upgrade_sock` (or
//! exits: then nothing else happens and this process keeps serving), then raises SIGQUIT on
//! this process, whose Pingora main loop hands the sockets over and shuts down gracefully.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long the new process has to bind `upgrade_sock`. It binds it right after loading its
/// config, before opening the cache zones; Pingora's old process gives up sending after
/// about 5 s, so this waits for the new one first.
pub const UPGRADE_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`Upgrader::upgrade`] looks for `upgrade_sock` and the new process's exit.
const POLL: Duration = Duration::from_millis(20);

/// Why an upgrade did not start. The running process keeps serving in every case.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// The command could not be started (a wrong path, no permission).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program of the command.
        program: OsString,
        /// What `exec` said.
        #[source]
        source: std::io::Error,
    },
    /// The new process exited before it waited for the sockets: usually a config it refuses
    /// (its own log says why).
    #[error("the new process exited before taking the sockets over ({0})")]
    Exited(std::process::ExitStatus),
    /// The new process did not bind `upgrade_sock` in time; it was killed.
    #[error("the new process did not listen on {} within {:?}; it was stopped", .0.display(), UPGRADE_START_TIMEOUT)]
    Timeout(PathBuf),
    /// The signal that hands the sockets over could not be raised.
    #[error("cannot raise SIGQUIT: {0}")]
    Signal(#[source] nix::Error),
}

/// Starts a new process of the proxy and hands the listening sockets over to it.
#[derive(Debug, Clone)]
pub struct Upgrader {
    program: OsString,
    args: Vec<OsString>,
    upgrade_sock: PathBuf,
}

impl Upgrader {
    /// An upgrader that runs `command` (program first, then its arguments), which must start
    /// the proxy with the same config and `--upgrade` (waiting on `upgrade_sock`). `None` when
    /// `command` is empty.
    pub fn new(command: Vec<OsString>, upgrade_sock: impl Into<PathBuf>) -> Option<Self> {
        let mut command = command.into_iter();
        Some(Upgrader {
            program: command.next()?,
            args: command.collect(),
            upgrade_sock: upgrade_sock.into(),
        })
    }

    /// Starts the new process and, once it waits on `upgrade_sock`, raises SIGQUIT on this
    /// process (Pingora sends the sockets and shuts down gracefully). Blocks for up to
    /// [`UPGRADE_START_TIMEOUT`]; returns the new process's id.
    pub fn upgrade(&self) -> Result<u32, UpgradeError> {
        // A socket file left by an earlier upgrade would read as "the new one is waiting".
        let _ = std::fs::remove_file(&self.upgrade_sock);
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        let pid = child.id();
        self.wait_listening(&mut child)?;
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGQUIT).map_err(UpgradeError::Signal)?;
        Ok(pid)
    }

    fn wait_listening(&self, child: &mut Child) -> Result<(), UpgradeError> {
        let deadline = Instant::now() + UPGRADE_START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(UpgradeError::Exited(status));
            }
            if self.upgrade_sock.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::Timeout(self.upgrade_sock.clone()));
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Tells the service manager this process is ready and is the service's main process
/// (`READY=1`, `MAINPID=`), when it runs under one that asked (`NOTIFY_SOCKET` set, as for a
/// systemd `Type=notify` unit); does nothing otherwise. `MAINPID=` is what moves a unit to
/// the process an upgrade started (the unit needs `NotifyAccess=all` to accept it from a
/// process that is not its main one). Errors are logged.
pub(crate) fn notify_ready() {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let states = [
        sd_notify::NotifyState::MainPid(std::process::id()),
        sd_notify::NotifyState::Ready,
    ];
    if let Err(e) = sd_notify::notify(false, &states) {
        log::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_command_is_no_upgrader() {
        assert!(Upgrader::new(Vec::new(), "/tmp/x.sock").is_none());
    }

    #[test]
    fn a_new_process_that_exits_early_is_reported_and_nothing_is_raised() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("upgrade.sock");
        std::fs::write(&sock, "stale").expect("write");
        let u = Upgrader::new(vec!["false".into()], &sock).expect("upgrader");
        match u.upgrade() {
            Err(UpgradeError::Exited(status)) => assert_eq!(status.code(), Some(1)),
            other => panic!("{other:?}"),
        }
        assert!(!sock.exists(), "the stale socket file was removed first");
        let missing =
            Upgrader::new(vec!["/nonexistent/galion-edge".into()], &sock).expect("upgrader");
        assert!(matches!(missing.upgrade(), Err(UpgradeError::Spawn { .. })));
    }
}
