//! Load-testing pieces the benches share: child processes stopped on drop, nginx as a loopback
//! load balancer, and `wrk` runs with their reports parsed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process stopped on drop: SIGTERM (nginx's master then stops its workers), then
/// SIGKILL if it is still there after a grace period.
#[derive(Debug)]
pub struct ChildGuard {
    name: &'static str,
    child: Option<Child>,
}

impl ChildGuard {
    pub fn spawn(name: &'static str, command: &mut Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        ChildGuard {
            name,
            child: Some(child),
        }
    }

    /// The child's process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the child has already exited (then it is reaped).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits for the child to exit by itself and returns what it printed on stdout; panics when
    /// it fails.
    pub fn finish(mut self) -> String {
        let child = self.child.take().expect("a running child");
        let output = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {}: {e}", self.name));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "{} failed ({}): {stdout}{}",
            self.name,
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `name` on PATH or in the sbin directories (Debian's nginx is /usr/sbin/nginx, which is not
/// on an unprivileged PATH); panics with the way to install it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed (looked on PATH and in /usr/sbin): run `make bench-tools` (make bench does)")
        })
}

/// nginx in the foreground with everything it writes under `dir`: one server on `port` passing
/// every request to `upstreams` (`127.0.0.1:<port>` each, round robin) over kept-alive HTTP/1.1.
pub fn start_nginx(nginx: &Path, dir: &Path, port: u16, upstreams: &[String]) -> ChildGuard {
    run_nginx(nginx, dir, port, upstreams, &NginxShape::default())
}

/// What differs between the nginx of the benches and the fail-over one of the replica campaign.
#[derive(Debug)]
struct NginxShape {
    workers: &'static str,
    /// Appended to every `server` line of the upstream block.
    server: &'static str,
    /// Extra directives of the proxying `location`.
    location: &'static str,
}

impl Default for NginxShape {
    fn default() -> Self {
        NginxShape {
            workers: "auto",
            server: "",
            location: "",
        }
    }
}

fn run_nginx(
    nginx: &Path,
    dir: &Path,
    port: u16,
    upstreams: &[String],
    shape: &NginxShape,
) -> ChildGuard {
    let d = dir.display();
    let NginxShape {
        workers,
        server,
        location,
    } = shape;
    let servers: String = upstreams
        .iter()
        .map(|u| format!("        server {u}{server};\n"))
        .collect();
    let config = format!(
        r#"worker_processes {workers};
error_log {d}/error.log warn;
pid {d}/nginx.pid;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream upstreams {{
{servers}        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://upstreams;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
{location}        }}
    }}
}}
"#
    );
    std::fs::write(dir.join("nginx.conf"), config).expect("writing nginx.conf");
    ChildGuard::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null()),
    )
}

/// What a request body says where each request needs a value of its own (a message id):
/// the thread's number and the request's, `<thread>-<n>`.
pub const EACH_REQUEST: &str = "@ID@";

/// The wrk script: `method` with `body` as JSON when given (and `auth` as the bearer), counting
/// the answers' statuses across threads, printed as `status <code> <count>` lines after wrk's
/// report. A body holding [`EACH_REQUEST`] is sent with a distinct value there every time.
pub fn wrk_script(method: &str, body: Option<&str>, auth: Option<&str>) -> String {
    let mut script = format!("wrk.method = \"{method}\"\n");
    if let Some(body) = body {
        writeln!(script, "wrk.body = [[{body}]]").unwrap();
        script.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    }
    if let Some(token) = auth {
        writeln!(
            script,
            "wrk.headers[\"Authorization\"] = \"Bearer {token}\""
        )
        .unwrap();
    }
    script.push_str(
        r#"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + count
    end
  end
  for code, count in pairs(total) do
    io.write(string.format("status %d %d\n", code, count))
  end
end
"#,
    );
    if body.is_some_and(|b| b.contains(EACH_REQUEST)) {
        writeln!(
            script,
            r#"
local sent = 0
function request()
  sent = sent + 1
  local body = string.gsub(wrk.body, "{EACH_REQUEST}", tid .. "-" .. sent)
  return wrk.format(nil, nil, nil, body)
end"#
        )
        .unwrap();
    }
    script
}

/// What one measured wrk run reported.
#[derive(Debug)]
pub struct Stats {
    /// Latency percentiles (50, 75, 90, 99) in microseconds.
    pub p50: f64,
    pub p75: f64,
    pub p90: f64,
    pub p99: f64,
    pub rps: f64,
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub socket_errors: u64,
}

impl Stats {
    /// Answers other than 2xx: a fast error is not a result.
    pub fn not_ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| !(200..300).contains(*status))
            .map(|(_, count)| count)
            .sum()
    }
}

/// A wrk duration (`394.00us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds.
fn micros(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or_else(|| panic!("no unit in wrk duration {text:?}"));
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|e| panic!("wrk duration {text:?}: {e}"));
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        other => panic!("unknown wrk time unit {other:?} in {text:?}"),
    };
    number * scale
}

/// Parses wrk's `--latency` report and the script's status lines.
pub fn parse_wrk(output: &str) -> Stats {
    let mut percentiles = BTreeMap::new();
    let (mut rps, mut requests, mut socket_errors) = (None, None, 0);
    let mut statuses = BTreeMap::new();
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let [percent, value] = words[..]
                && let Some(percent) = percent.strip_suffix('%')
            {
                percentiles.insert(percent.to_owned(), micros(value));
                continue;
            }
            in_distribution = false;
        }
        match words[..] {
            ["Requests/sec:", value] => rps = value.parse::<f64>().ok(),
            [count, "requests", "in", ..] => requests = count.parse::<u64>().ok(),
            ["Socket", "errors:", ..] => {
                socket_errors = line
                    .split([',', ' '])
                    .filter_map(|w| w.parse::<u64>().ok())
                    .sum();
            }
            ["status", code, count] => {
                statuses.insert(
                    code.parse().expect("a status code"),
                    count.parse().expect("a count"),
                );
            }
            _ => {}
        }
    }
    let percentile = |p: &str| {
        *percentiles
            .get(p)
            .unwrap_or_else(|| panic!("no {p}% latency in wrk's output:\n{output}"))
    };
    Stats {
        p50: percentile("50"),
        p75: percentile("75"),
        p90: percentile("90"),
        p99: percentile("99"),
        rps: rps.unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{output}")),
        requests: requests.unwrap_or_else(|| panic!("no request count in wrk's output:\n{output}")),
        statuses,
        socket_errors,
    }
}

/// Runs wrk against `url` for `duration` (2 threads, `connections` connections) and parses its
/// report.
pub fn run_wrk(
    wrk: &Path,
    script: &Path,
    url: &str,
    duration: Duration,
    connections: u32,
) -> Stats {
    let seconds = duration.as_secs().max(1);
    let guard = ChildGuard::spawn(
        "wrk",
        Command::new(wrk)
            .arg("-t2")
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg("--timeout")
            .arg("10s")
            .arg("--latency")
            .arg("-s")
            .arg(script)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    parse_wrk(&guard.finish())
}

/// nginx as in [`start_nginx`], set up to fail over: a request that cannot reach an upstream
/// (connection refused or reset before the request went out, or a connect timeout) goes to the
/// next one (`proxy_next_upstream error timeout`, at most 3 tries), and an upstream that failed
/// is left alone for a second. nginx re-sends an idempotent request (GET) whose upstream died
/// mid-answer; a POST or PATCH already sent is answered 502, as it may have taken effect.
pub fn start_failover_nginx(
    nginx: &Path,
    dir: &Path,
    port: u16,
    upstreams: &[String],
) -> ChildGuard {
    let shape = NginxShape {
        workers: "1",
        server: " max_fails=1 fail_timeout=1s",
        location: "            proxy_next_upstream error timeout;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 60s;
",
    };
    run_nginx(nginx, dir, port, upstreams, &shape)
}

/// The CPU time (user and system, all threads) process `pid` has used so far; `None` once it is
/// gone. Unlike throughput, CPU per request hardly moves with how busy the machine is.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields follow its last `)`, the
    // first of them being field 3 (the state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In clock ticks of USER_HZ, which Linux fixes at 100 for user space on every architecture
    // we run on (the kernel's own HZ may differ; /proc converts).
    const USER_HZ: u64 = 100;
    Some(Duration::from_micros(ticks * 1_000_000 / USER_HZ))
}

/// Every process descending from `pid` (its children, theirs, and so on).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// The CPU time `pids` have used together so far (those gone count for nothing).
pub fn total_cpu(pids: &[u32]) -> Duration {
    pids.iter().filter_map(|pid| process_cpu(*pid)).sum()
}
