//! A brain that runs a program: the prompt on stdin, the system prompt in the environment,
//! the reply on stdout.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::process::Command;

use super::{Answer, Brain, BrainError, Prompt};

/// The environment variable that carries the system prompt to the program.
pub const SYSTEM_PROMPT_ENV: &str = "MOLECULE_SYSTEM_PROMPT";

#[derive(Debug, Clone)]
pub struct CommandBrain {
    program: String,
    args: Vec<String>,
    timeout: Duration,
}

impl CommandBrain {
    /// `argv` runs without a shell; `None` if it is empty.
    pub fn new(argv: &[String], timeout: Duration) -> Option<Self> {
        let (program, args) = argv.split_first()?;
        Some(Self {
            program: program.clone(),
            args: args.to_vec(),
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl Brain for CommandBrain {
    async fn reply(&self, prompt: Prompt) -> Result<Answer, BrainError> {
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env(SYSTEM_PROMPT_ENV, &prompt.system)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout can kill whatever the program started too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BrainError::Spawn {
                program: self.program.clone(),
                reason: e.to_string(),
            })?;
        let pid = child.id();
        let mut stdin = child.stdin.take();
        let feed = async move {
            if let Some(stdin) = stdin.as_mut() {
                // A program that does not read its input closes the pipe early: not an error.
                let _ = stdin.write_all(prompt.text.as_bytes()).await;
            }
            drop(stdin);
        };
        let run = async {
            let ((), output) = tokio::join!(feed, child.wait_with_output());
            output
        };
        let output = match tokio::time::timeout(self.timeout, run).await {
            Ok(output) => output.map_err(|e| BrainError::Io(e.to_string()))?,
            Err(_) => {
                // Dropping the child already killed it; this reaches its descendants.
                if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                return Err(BrainError::Timeout(self.timeout));
            }
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let first_line = stderr
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default();
            return Err(BrainError::Exit {
                status: describe_status(output.status),
                stderr: first_line.chars().take(300).collect(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .trim()
            .to_owned()
            .into())
    }

    fn describe(&self) -> String {
        format!(
            "command {} (timeout {}s)",
            self.program,
            self.timeout.as_secs_f64()
        )
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}
