//! The browser's own network namespace.
//!
//! Chromium drops every connection it holds, loopback ones included, with
//! `net::ERR_NETWORK_CHANGED` whenever it sees the machine's addresses change, and the Docker
//! specs that run beside the UI specs add and remove a veth interface (with its IPv6 link-local
//! address) for every container they start. A clean-clone CI run failed that way: five of the
//! console's module loads were cut while a Docker spec started an agent. So chromedriver and the
//! browser run in a network namespace of their own that holds nothing but a loopback interface,
//! where no other spec can change anything, and two forwarders join it to the test:
//!
//! - the host's port, bound inside under the same number, so every URL, `Origin` and cookie
//!   the console sees is the one it would see without the namespace;
//! - chromedriver's port, reached from the test through a port of its own.
//!
//! Making a namespace takes `CAP_SYS_ADMIN` (CI and this machine run as root). Without it the
//! browser runs in the test's namespace and says so on stderr.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use nix::sched::CloneFlags;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A network namespace with only `lo` (up), or the test's own when none could be made.
pub struct Netns {
    /// `/proc/thread-self/ns/net` of a thread that made the namespace; `None` when the browser
    /// shares the test's namespace.
    fd: Option<Arc<OwnedFd>>,
    /// The forwarders; they end with the namespace.
    forwarders: Vec<JoinHandle<()>>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        for task in &self.forwarders {
            task.abort();
        }
    }
}

impl Netns {
    /// A new namespace, or the test's own (with a note on stderr) when this process may not
    /// make one.
    pub fn new() -> Netns {
        let made = std::thread::scope(|scope| {
            scope
                .spawn(|| -> io::Result<OwnedFd> {
                    // A thread's namespace is its own: this one enters the new namespace and
                    // ends, and the descriptor keeps the namespace for later threads.
                    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
                    loopback_up()?;
                    Ok(File::open("/proc/thread-self/ns/net")?.into())
                })
                .join()
                .expect("the thread that makes the browser's network namespace")
        });
        let fd = match made {
            Ok(fd) => Some(Arc::new(fd)),
            Err(e) => {
                eprintln!(
                    "the browser shares the test's network namespace (making its own failed: \
                     {e}); Docker specs running beside it can make it drop connections"
                );
                None
            }
        };
        Netns {
            fd,
            forwarders: Vec::new(),
        }
    }

    /// Runs `f` on a thread inside the namespace: the sockets it makes and the processes it
    /// starts belong to the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
        enter(self.fd.as_deref(), f)
    }

    /// Makes the host's `127.0.0.1:port` reachable under the same address inside.
    pub fn expose_host_port(&mut self, port: u16) -> io::Result<()> {
        if self.fd.is_none() {
            return Ok(());
        }
        let inside = self.enter(|| std::net::TcpListener::bind(("127.0.0.1", port)))?;
        inside.set_nonblocking(true)?;
        let inside = TcpListener::from_std(inside)?;
        self.forwarders.push(tokio::spawn(async move {
            while let Ok((browser, _)) = inside.accept().await {
                tokio::spawn(async move {
                    if let Ok(host) = TcpStream::connect(("127.0.0.1", port)).await {
                        splice(browser, host).await;
                    }
                });
            }
        }));
        Ok(())
    }

    /// A port of the test's namespace that leads to `127.0.0.1:port` inside.
    pub fn reach_inside_port(&mut self, port: u16) -> io::Result<u16> {
        let Some(fd) = self.fd.clone() else {
            return Ok(port);
        };
        let outside = std::net::TcpListener::bind("127.0.0.1:0")?;
        let local = outside.local_addr()?.port();
        outside.set_nonblocking(true)?;
        let outside = TcpListener::from_std(outside)?;
        self.forwarders.push(tokio::spawn(async move {
            while let Ok((test, _)) = outside.accept().await {
                let fd = fd.clone();
                tokio::spawn(async move {
                    let connected = tokio::task::spawn_blocking(move || {
                        enter(Some(&*fd), || {
                            std::net::TcpStream::connect(("127.0.0.1", port))
                        })
                    })
                    .await;
                    if let Ok(Ok(inside)) = connected
                        && inside.set_nonblocking(true).is_ok()
                        && let Ok(inside) = TcpStream::from_std(inside)
                    {
                        splice(test, inside).await;
                    }
                });
            }
        }));
        Ok(local)
    }
}

fn enter<T: Send>(fd: Option<&OwnedFd>, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    let Some(fd) = fd else {
        return f();
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
                f()
            })
            .join()
            .expect("a thread inside the browser's network namespace")
    })
}

/// Copies both ways until either side closes.
async fn splice(mut a: TcpStream, mut b: TcpStream) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

/// Brings up the calling thread's `lo` (a new namespace starts with it down).
#[allow(unsafe_code)]
fn loopback_up() -> io::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    // SAFETY: `socket` returns a new descriptor or -1; a new one is owned by nothing else, so
    // `OwnedFd` may close it.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    let socket = unsafe { OwnedFd::from_raw_fd(socket) };
    // SAFETY: `ifreq` is plain old data (arrays and a union of integers), valid when zeroed.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: both calls get a live socket and a pointer to an `ifreq` that outlives them;
    // SIOCGIFFLAGS writes the flags member of its union and SIOCSIFFLAGS reads it.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
