//! The git processes of one remote operation: a scratch directory removed when it ends, one
//! deadline for every process, capped output, and git's reason summarised for an error body.

use super::*;

pub(super) fn scratch_error(e: &io::Error) -> FetchError {
    tracing::error!(error = %e, "the resolver scratch directory is unusable");
    FetchError::Upstream("the host could not prepare the checkout".into())
}

/// What git said went wrong, on one line and cut short: its first two `fatal:`/`error:` lines,
/// else its last two lines.
pub(super) fn summarise(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("hint:"))
        .collect();
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .take(2)
        .map(reason_of)
        .collect();
    let tail = if errors.is_empty() {
        lines[lines.len().saturating_sub(2)..].join(" / ")
    } else {
        errors.join(" / ")
    };
    let tail = if tail.is_empty() {
        "git gave no reason".to_owned()
    } else {
        tail
    };
    if tail.len() <= MAX_ERROR_TEXT {
        return tail;
    }
    let mut end = MAX_ERROR_TEXT;
    while !tail.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &tail[..end])
}

/// git's reason in one of its error lines: without the `fatal:` or `error:` label and without
/// curl's `unable to access '<url>': ` (the caller names the URL it asked for; git would name
/// the one a configured rewrite made of it).
pub(super) fn reason_of(line: &str) -> &str {
    let line = line
        .strip_prefix("fatal:")
        .or_else(|| line.strip_prefix("error:"))
        .unwrap_or(line)
        .trim_start();
    if let Some(rest) = line.strip_prefix("unable to access '")
        && let Some((_, reason)) = rest.split_once("': ")
    {
        return reason;
    }
    line
}

/// A directory of one remote operation, removed when the operation ends.
pub(super) struct Scratch {
    pub(super) root: PathBuf,
    home: PathBuf,
}

impl Scratch {
    pub(super) fn new(base: &Path) -> Result<Self, FetchError> {
        let root = base.join(format!("op-{}", uuid::Uuid::new_v4().simple()));
        let home = root.join("home");
        fs::create_dir_all(&home).map_err(|e| scratch_error(&e))?;
        Ok(Scratch { root, home })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.root) {
            tracing::warn!(error = %e, dir = %self.root.display(), "removing a resolver scratch directory failed");
        }
    }
}

pub(super) enum GitError {
    Spawn(io::Error),
    Timeout,
    TooMuchOutput,
    Failed { stderr: String },
}

/// Runs the git processes of one operation under one deadline.
pub(super) struct Git<'a> {
    host: &'a RemoteHost,
    home: &'a Path,
    deadline: Instant,
    /// The credential for the operation's host, attached only to commands that talk to it.
    token: Option<&'a SecretString>,
}

impl<'a> Git<'a> {
    pub(super) fn new(host: &'a RemoteHost, scratch: &'a Scratch, remote: &Admitted) -> Self {
        Git {
            host,
            home: &scratch.home,
            deadline: Instant::now() + host.config.timeout,
            token: host.credentials.get(&remote.authority),
        }
    }

    fn command(&self, cwd: &Path, args: &[&str], network: bool) -> Command {
        let config = &self.host.config;
        let mut cmd = Command::new(&config.git);
        cmd.env_clear()
            .env("PATH", &config.path)
            .env("LC_ALL", "C")
            .env("LANG", "C");
        for (key, value) in &self.host.plain_env {
            cmd.env(key, value);
        }
        cmd.env("HOME", self.home)
            .env("XDG_CONFIG_HOME", self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ALLOW_PROTOCOL", &config.allowed_protocols);
        let mut git_config: Vec<(&str, &str)> = self
            .host
            .git_config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // A redirect could lead to a host outside the grant; the grant is checked only once.
        git_config.push(("http.followRedirects", "false"));
        git_config.push(("init.defaultBranch", "main"));
        let header;
        if let (true, Some(token)) = (network, self.token) {
            header = format!("Authorization: Bearer {}", token.expose_secret());
            git_config.push(("http.extraHeader", &header));
        }
        cmd.env("GIT_CONFIG_COUNT", git_config.len().to_string());
        for (i, (key, value)) in git_config.iter().enumerate() {
            cmd.env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        cmd.args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills git's helpers too.
            .process_group(0);
        cmd
    }

    /// Runs git with `args` in `cwd` and returns its stdout (at most `max_stdout` bytes; more
    /// is an error). `network` says whether the command talks to the remote and so gets the
    /// credential.
    pub(super) fn run(
        &self,
        cwd: &Path,
        args: &[&str],
        network: bool,
        max_stdout: usize,
    ) -> Result<Vec<u8>, GitError> {
        if Instant::now() >= self.deadline {
            return Err(GitError::Timeout);
        }
        self.host.processes.fetch_add(1, Ordering::SeqCst);
        let mut child = self
            .command(cwd, args, network)
            .spawn()
            .map_err(GitError::Spawn)?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            kill(&mut child);
            return Err(GitError::Spawn(io::Error::other("no pipes")));
        };
        let out = std::thread::spawn(move || read_capped(stdout, max_stdout));
        let err = std::thread::spawn(move || read_tail(stderr, STDERR_TAIL));
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    kill(&mut child);
                    return Err(GitError::Spawn(e));
                }
            }
            let now = Instant::now();
            if now >= self.deadline {
                // The reader threads end when the killed processes' pipes close; they are not
                // waited for.
                kill(&mut child);
                return Err(GitError::Timeout);
            }
            std::thread::sleep(pause.min(self.deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let (stdout, overflow) = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        if !status.success() {
            return Err(GitError::Failed { stderr });
        }
        if overflow {
            return Err(GitError::TooMuchOutput);
        }
        Ok(stdout)
    }
}

/// Kills the process group of `child` (git and the helpers it started), then `child`.
pub(super) fn kill(child: &mut Child) {
    let group = format!("-{}", child.id());
    // `kill(1)` rather than a syscall: this crate keeps `unsafe` out and has no signal crate.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads everything, keeping at most `cap` bytes; says whether more came.
pub(super) fn read_capped(mut pipe: impl Read, cap: usize) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut overflow = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                overflow |= n > room;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (kept, overflow)
}

/// Reads everything, keeping the last `cap` bytes as text.
pub(super) fn read_tail(mut pipe: impl Read, cap: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > cap {
                    kept.drain(..kept.len() - cap);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}
