//! Real faults for the fault campaigns (`tests/tests/runtime_faults.rs`,
//! `tests/tests/replica_campaign.rs`): a Docker socket that can be cut off, a small tmpfs that
//! fills up, and a throw-away PostgreSQL server that can be restarted. Each undoes itself on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// A unix socket that forwards every connection to the Docker engine's socket until it is
/// [cut](DockerSocketProxy::cut): then the listener closes (a connect is refused, as when the
/// daemon is down) and every forwarded connection is dropped; [restore](DockerSocketProxy::restore)
/// listens again.
#[derive(Debug)]
pub struct DockerSocketProxy {
    path: PathBuf,
    target: PathBuf,
    /// The live generation: cancelling it closes the listener and its connections.
    live: Mutex<Option<CancellationToken>>,
    _dir: tempfile::TempDir,
}

impl DockerSocketProxy {
    /// Listens on a fresh socket in front of `/var/run/docker.sock`.
    pub fn start() -> Self {
        Self::start_in_front_of(Path::new("/var/run/docker.sock"))
    }

    pub fn start_in_front_of(target: &Path) -> Self {
        let dir = tempfile::tempdir().expect("a socket dir");
        let proxy = DockerSocketProxy {
            path: dir.path().join("docker.sock"),
            target: target.to_path_buf(),
            live: Mutex::new(None),
            _dir: dir,
        };
        proxy.restore();
        proxy
    }

    /// The `runtime.docker_host` value that reaches the engine through this proxy.
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// The engine becomes unreachable: connects are refused and open connections drop.
    pub fn cut(&self) {
        if let Some(live) = self.live.lock().expect("the proxy state").take() {
            live.cancel();
        }
    }

    /// The engine is reachable again (idempotent).
    pub fn restore(&self) {
        let mut live = self.live.lock().expect("the proxy state");
        if live.is_some() {
            return;
        }
        // A dead listener leaves its socket file behind; binding needs the name free.
        let _ = std::fs::remove_file(&self.path);
        let listener =
            std::os::unix::net::UnixListener::bind(&self.path).expect("binding the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let listener = tokio::net::UnixListener::from_std(listener).expect("a tokio listener");
        let token = CancellationToken::new();
        let (stop, target) = (token.clone(), self.target.clone());
        tokio::spawn(async move {
            loop {
                let mut client = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (stop, target) = (stop.clone(), target.clone());
                tokio::spawn(async move {
                    let Ok(mut engine) = tokio::net::UnixStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut engine) => {}
                    }
                });
            }
        });
        *live = Some(token);
    }
}

impl Drop for DockerSocketProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// A tmpfs of a fixed size mounted on a fresh directory; unmounted on drop (lazily if something
/// still holds it open), also when the test fails.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: `2m`). Needs root.
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a mount point");
        let output = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            output.status.success(),
            "mounting a {size} tmpfs on {} failed (the disk-full spec needs root): {}",
            dir.path().display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `name` until a write fails with "no space left"; returns the
    /// ballast's path and how many bytes it took.
    pub fn fill(&self, name: &str) -> (PathBuf, u64) {
        use std::io::Write as _;
        let path = self.path().join(name);
        let mut file = std::fs::File::create(&path).expect("creating the ballast");
        let chunk = vec![0u8; 4096];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(err) if err.raw_os_error() == Some(28) => break,
                Err(err) => panic!("writing the ballast: {err}"),
            }
        }
        // Flushing the last partial page may also fail for want of space; that is the point.
        let _ = file.sync_all();
        (path, written)
    }

    /// Free bytes on the file system now.
    pub fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(self.path())
            .output()
            .expect("running df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

/// A PostgreSQL server of its own (`scripts/test-postgres.sh` with a private data dir and port),
/// so a spec can restart it without disturbing the shared test server; stopped and deleted on
/// drop.
#[derive(Debug)]
pub struct ThrowawayPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    dir: PathBuf,
    port: u16,
}

impl ThrowawayPostgres {
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "molecule-campaign-pg-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        let mut server = ThrowawayPostgres {
            url: String::new(),
            dir,
            port: crate::free_port(),
        };
        server.url = server.script("start");
        server
    }

    fn script(&self, command: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-postgres.sh");
        let output = Command::new("bash")
            .arg(script)
            .arg(command)
            .env("MOLECULE_TEST_PG_DIR", &self.dir)
            .env("MOLECULE_TEST_PG_PORT", self.port.to_string())
            .output()
            .expect("running scripts/test-postgres.sh");
        assert!(
            output.status.success(),
            "test-postgres.sh {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: every connection is closed), keeps it down for `down`,
    /// and starts it again; returns how long it was unavailable.
    pub fn restart(&self, down: Duration) -> Duration {
        let began = Instant::now();
        self.script("stop");
        std::thread::sleep(down);
        self.script("start");
        began.elapsed()
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-postgres.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("stop")
            .env("MOLECULE_TEST_PG_DIR", &self.dir)
            .env("MOLECULE_TEST_PG_PORT", self.port.to_string())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
        let mut lock = self.dir.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}
