//! The Landlock sandbox of process-runtime agents and of the commands the host runs in their
//! directories. A confined process may read, write and execute beneath its own workspace
//! directories (`configs` and its private `tmp`), read and execute the system's read-only
//! directories and its agent binary, use `/dev/null`, `/dev/zero` and the random devices, and
//! nothing else of the filesystem; it may bind TCP only on its own port; where the kernel can
//! (ABI 6), it can neither signal processes outside its sandbox nor reach abstract UNIX sockets
//! created outside it. Landlock also keeps a sandboxed process from tracing (and so from
//! reading the memory or `/proc/<pid>/environ` of) any process outside its sandbox.
//!
//! The ruleset is built in the host before the child is forked; between fork and exec the child
//! only calls `prctl(PR_SET_NO_NEW_PRIVS)` and `landlock_restrict_self`.

use std::io;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreated, RulesetCreatedAttr, RulesetError, RulesetStatus,
    Scope,
};

/// System directories every confined process may read and execute from.
pub(super) const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];
/// Devices it may read and write.
pub(super) const DEVICES_READ_WRITE: &[&str] = &["/dev/null", "/dev/zero"];
/// Devices it may read.
pub(super) const DEVICES_READ: &[&str] = &["/dev/urandom", "/dev/random"];
/// Where the resolver's configuration lives; systemd-resolved makes it a link into `/run`.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// What a [`SystemRule`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Grant {
    /// Read and execute files and list directories, beneath the path (or the file itself).
    ReadOnly,
    /// Read a device.
    Device,
    /// Read and write a device (and truncate it, as a shell's `>` does).
    WritableDevice,
}

/// A path outside the workspace that confined processes may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SystemRule {
    pub path: PathBuf,
    pub grant: Grant,
}

/// Why a process cannot be confined.
#[derive(Debug, thiserror::Error)]
pub(super) enum SandboxError {
    #[error("{0}")]
    Landlock(#[from] RulesetError),
    #[error("opening {0} for the sandbox: {1}")]
    Path(PathBuf, String),
    #[error("the kernel accepted the sandbox but did not enforce it")]
    NotEnforced,
}

/// The filesystem rights every sandbox must enforce, or the runtime refuses to run agents:
/// Landlock ABI 3 (Linux 6.2) covers reads, writes, creation, removal, renames and links across
/// directories, and truncation.
fn required_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(ABI::V3)
}

/// The filesystem rights handled where the kernel supports them: ABI 5 adds device ioctls.
fn handled_fs() -> BitFlags<AccessFs> {
    AccessFs::from_all(ABI::V5)
}

/// The rights a grant gives on a directory or, narrower, on a single file.
fn access(grant: Grant, is_dir: bool) -> BitFlags<AccessFs> {
    match grant {
        Grant::ReadOnly if is_dir => AccessFs::from_read(ABI::V5),
        Grant::ReadOnly => AccessFs::Execute | AccessFs::ReadFile,
        Grant::Device => AccessFs::ReadFile.into(),
        Grant::WritableDevice => {
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev
        }
    }
}

/// The paths outside its workspace a confined process may use: the system directories,
/// `extra` (the operator's `runtime.process_readonly_paths`), the agent binary, the devices,
/// and `resolv_conf` (where `/etc/resolv.conf` really is) when that lies outside them.
pub(super) fn system_rules(
    agent_binary: &Path,
    extra: &[PathBuf],
    resolv_conf: Option<&Path>,
) -> Vec<SystemRule> {
    let rule = |path: &Path, grant| SystemRule {
        path: path.to_path_buf(),
        grant,
    };
    let mut rules: Vec<SystemRule> = SYSTEM_DIRS
        .iter()
        .map(|dir| rule(Path::new(dir), Grant::ReadOnly))
        .chain(extra.iter().map(|dir| rule(dir, Grant::ReadOnly)))
        .chain(std::iter::once(rule(agent_binary, Grant::ReadOnly)))
        .collect();
    if let Some(target) = resolv_conf {
        let covered = rules
            .iter()
            .any(|r| r.grant == Grant::ReadOnly && target.starts_with(&r.path));
        if !covered {
            rules.push(rule(target, Grant::ReadOnly));
        }
    }
    rules.extend(
        DEVICES_READ_WRITE
            .iter()
            .map(|dev| rule(Path::new(dev), Grant::WritableDevice)),
    );
    rules.extend(
        DEVICES_READ
            .iter()
            .map(|dev| rule(Path::new(dev), Grant::Device)),
    );
    rules
}

/// Where `/etc/resolv.conf` leads, once its links are followed.
pub(super) fn resolv_conf_target() -> Option<PathBuf> {
    std::fs::canonicalize(RESOLV_CONF).ok()
}

/// The sandbox of one process: the system rules, full access beneath each of `own` (the
/// workspace's directories, opened by the caller without following a link), and TCP bind on
/// `bind_port` only (none when `None`).
pub(super) fn ruleset(
    system: &[SystemRule],
    own: &[BorrowedFd<'_>],
    bind_port: Option<u16>,
) -> Result<RulesetCreated, SandboxError> {
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(required_fs())?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(handled_fs())?
        .handle_access(AccessNet::BindTcp)?
        .scope(Scope::from_all(ABI::V6))?
        .create()?;
    for rule in system {
        if !rule.path.exists() {
            // Not on this system (`/lib32` on most, say): nothing to allow.
            continue;
        }
        let fd = PathFd::new(&rule.path)
            .map_err(|e| SandboxError::Path(rule.path.clone(), e.to_string()))?;
        let is_dir = rule.path.is_dir();
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access(rule.grant, is_dir)))?;
    }
    for dir in own {
        ruleset = ruleset.add_rule(PathBeneath::new(*dir, handled_fs()))?;
    }
    if let Some(port) = bind_port {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::BindTcp))?;
    }
    Ok(ruleset)
}

/// The hook that makes a forked child enforce `ruleset` on itself between fork and exec, after
/// the uid switch and `chdir` std performs there. A ruleset the kernel does not enforce fails
/// the spawn: nothing runs unconfined.
///
/// It runs in the forked child of a multithreaded parent, where only async-signal-safe work is
/// sound: it moves the ruleset out of its `Option` (no allocation), and `restrict_self` makes
/// two system calls (`prctl(PR_SET_NO_NEW_PRIVS)`, `landlock_restrict_self`) and closes the
/// ruleset's descriptor; its status and errors are plain values (an `io::Error` from an errno
/// holds no allocation), and the error returned is built from an `ErrorKind`, which allocates
/// nothing either.
fn enforcer(ruleset: RulesetCreated) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    let mut ruleset = Some(ruleset);
    move || match ruleset.take().map(RulesetCreated::restrict_self) {
        Some(Ok(status)) if status.ruleset != RulesetStatus::NotEnforced && status.no_new_privs => {
            Ok(())
        }
        _ => Err(io::ErrorKind::PermissionDenied.into()),
    }
}

/// Makes the child of `command` enforce `ruleset` (see [`enforcer`]).
#[allow(unsafe_code)]
pub(super) fn confine(command: &mut tokio::process::Command, ruleset: RulesetCreated) {
    // SAFETY: the hook does only async-signal-safe work (see `enforcer`).
    unsafe {
        command.pre_exec(enforcer(ruleset));
    }
}

/// Makes the child of a pty `command` enforce `ruleset` (see [`enforcer`]), after it became the
/// leader of a new session with the pty as its controlling terminal.
#[allow(unsafe_code)]
pub(super) fn confine_pty(
    command: pty_process::Command,
    ruleset: RulesetCreated,
) -> pty_process::Command {
    // SAFETY: the hook does only async-signal-safe work (see `enforcer`); the crate's own
    // (`setsid`, the `TIOCSCTTY` ioctl) runs before it and is async-signal-safe too.
    unsafe { command.pre_exec(enforcer(ruleset)) }
}

/// Whether this kernel enforces the sandbox: the system part of it is built and enforced on a
/// throwaway thread (Landlock restricts only the calling thread, which then ends), and that
/// thread must be refused a directory outside it.
pub(super) fn probe(system: &[SystemRule]) -> Result<(), SandboxError> {
    let ruleset = ruleset(system, &[], None)?;
    std::thread::Builder::new()
        .name("landlock-probe".into())
        .spawn(move || -> Result<(), SandboxError> {
            let status = ruleset.restrict_self()?;
            if status.ruleset == RulesetStatus::NotEnforced {
                return Err(SandboxError::NotEnforced);
            }
            match std::fs::read_dir("/") {
                Err(err) if err.kind() == io::ErrorKind::PermissionDenied => Ok(()),
                _ => Err(SandboxError::NotEnforced),
            }
        })
        .map_err(|e| SandboxError::Path(PathBuf::from("/"), e.to_string()))?
        .join()
        .unwrap_or(Err(SandboxError::NotEnforced))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd as _;

    use super::*;

    fn paths(rules: &[SystemRule], grant: Grant) -> Vec<&Path> {
        rules
            .iter()
            .filter(|r| r.grant == grant)
            .map(|r| r.path.as_path())
            .collect()
    }

    #[test]
    fn the_system_part_covers_what_agents_run_on_and_nothing_of_the_hosts() {
        let agent = Path::new("/srv/molecule/bin/molecule-agent");
        let rules = system_rules(agent, &[PathBuf::from("/opt/tools")], None);
        let readable = paths(&rules, Grant::ReadOnly);
        for needed in [
            "/usr",
            "/bin",
            "/sbin",
            "/lib",
            "/lib64",
            "/etc",
            "/opt/tools",
        ] {
            assert!(
                readable.contains(&Path::new(needed)),
                "{needed}: {readable:?}"
            );
        }
        assert!(readable.contains(&agent), "the agent binary: {readable:?}");
        assert_eq!(
            paths(&rules, Grant::WritableDevice),
            [Path::new("/dev/null"), Path::new("/dev/zero")]
        );
        assert_eq!(
            paths(&rules, Grant::Device),
            [Path::new("/dev/urandom"), Path::new("/dev/random")]
        );
        // Nothing that holds the host's or other users' data, and no parent of such a place.
        for host in [
            "/", "/tmp", "/var", "/run", "/proc", "/sys", "/root", "/home", "/dev", "/srv",
        ] {
            assert!(
                rules.iter().all(|r| r.path != Path::new(host)),
                "{host} must not be in the sandbox"
            );
        }
        assert!(
            rules.iter().all(|r| r.grant != Grant::ReadOnly
                || !Path::new("/srv/molecule/data").starts_with(&r.path)),
            "no rule covers a data dir beside the binary"
        );
    }

    #[test]
    fn a_resolv_conf_outside_etc_is_added_as_a_single_file() {
        let agent = Path::new("/usr/local/bin/molecule-agent");
        let stub = Path::new("/run/systemd/resolve/stub-resolv.conf");
        let rules = system_rules(agent, &[], Some(stub));
        assert!(paths(&rules, Grant::ReadOnly).contains(&stub));
        assert!(!rules.iter().any(|r| r.path == Path::new("/run")));
        let plain = system_rules(agent, &[], Some(Path::new("/etc/resolv.conf")));
        assert_eq!(plain, system_rules(agent, &[], None));
    }

    #[test]
    fn this_kernel_enforces_the_sandbox() {
        let rules = system_rules(
            Path::new("/usr/bin/true"),
            &[],
            resolv_conf_target().as_deref(),
        );
        probe(&rules).expect("Landlock enforces the sandbox on this kernel");
    }

    /// The rules as a thread confined by them sees them: its own directory fully, the system
    /// read-only, nothing else, TCP bind only on its port.
    #[test]
    fn a_confined_thread_uses_its_own_directory_and_nothing_else() {
        let own = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let own_dir = std::fs::File::open(own.path()).unwrap();
        let port = crate::runtime::free_loopback_port().unwrap();
        let other_port = crate::runtime::free_loopback_port().unwrap();
        let rules = system_rules(Path::new("/usr/bin/true"), &[], None);
        let ruleset = ruleset(&rules, &[own_dir.as_fd()], Some(port)).unwrap();
        let (own_path, outside_path) = (own.path().to_path_buf(), outside.path().to_path_buf());
        let seen = std::thread::spawn(move || {
            let status = ruleset.restrict_self().unwrap();
            assert_eq!(status.ruleset, RulesetStatus::FullyEnforced);
            let denied = |r: io::Result<()>| {
                matches!(r, Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
            };
            let write = |p: &Path| std::fs::write(p, "x");
            let bind = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).map(drop);
            [
                ("own write", write(&own_path.join("f")).is_ok()),
                ("own read", std::fs::read(own_path.join("f")).is_ok()),
                ("system read", std::fs::read("/etc/passwd").is_ok()),
                ("outside read", !denied(std::fs::read(outside_path.join("secret")).map(drop))),
                ("outside write", !denied(write(&outside_path.join("new")))),
                ("tmp write", !denied(write(&std::env::temp_dir().join(format!("ll-{port}"))))),
                ("system write", !denied(write(Path::new("/etc/molecule-sandbox-test")))),
                ("own port", bind(port).is_ok()),
                ("other port", !denied(bind(other_port))),
            ]
        })
        .join()
        .unwrap();
        assert_eq!(
            seen,
            [
                ("own write", true),
                ("own read", true),
                ("system read", true),
                ("outside read", false),
                ("outside write", false),
                ("tmp write", false),
                ("system write", false),
                ("own port", true),
                ("other port", false),
            ]
        );
    }
}
