//! Where the host may call an agent. One policy decides it for registration, workspace creation,
//! the proxy's check before every call, and the A2A client's own resolver when it connects:
//!
//! - URLs are read with the WHATWG parser the client uses (`reqwest::Url`, the `url` crate), so
//!   `http://2130706433`, `http://0x7f.1` or `http://127%2E0.0.1` mean what the client would
//!   connect to; `http(s)` only, no userinfo, no port 0.
//! - Link-local (cloud metadata), multicast, unspecified, broadcast, documentation,
//!   benchmarking, carrier-grade NAT, 0/8 and 240/4 are refused always, also inside IPv6 forms
//!   that carry an IPv4 address (mapped, NAT64, 6to4).
//! - In production, loopback (any spelling, `localhost` and `*.localhost` names, names resolving
//!   there) and private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) are refused, except: the
//!   loopback URL the host's own runtime assigned the workspace ([`Owner::RuntimeLoopback`]), the
//!   runtime's own network name for it ([`Owner::RuntimeName`]: may resolve to private
//!   addresses), and private networks the operator lists in `a2a.private_agent_networks`.
//! - A name must resolve, and every address it resolves to must pass. Registration resolves it
//!   (the runtime's own URLs excepted: they resolve only inside the runtime's network); the
//!   proxy resolves it before each call; and the client's [`Resolver`] resolves it again when it
//!   connects and refuses an answer that fails, so a name that answers a public address to the
//!   check and 127.0.0.1 to the connection (DNS rebinding) reaches nothing.
//!
//! Specs supply DNS answers for names they invent through [`DnsAnswers`] (`Config::faults`).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::config::Config;
pub use crate::config::faults::DnsAnswers;
use crate::config::faults::name_key as key;

const INVALID: &str = "invalid agent url";
const BLOCKED: &str = "agent url points at a blocked address range";
const UNRESOLVABLE: &str = "agent url names a host that does not resolve";

/// An agent URL that passed the policy. Holds the URL as given: the proxy reads it with the same
/// parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentUrl(String);

impl AgentUrl {
    /// The checks that need no DNS (syntax, addresses written in the URL, `localhost` names) for
    /// a URL nobody's runtime assigned: what a plan can check before anything is created.
    /// Registration and creation go through [`Policy::check`], which also resolves names.
    pub fn parse(raw: &str, config: &Config) -> Result<Self, &'static str> {
        let networks = config
            .a2a
            .private_agent_networks
            .iter()
            .filter_map(|entry| Network::parse(entry).ok())
            .collect();
        let policy = Policy::with(config.is_production(), networks, DnsAnswers::default());
        let reach = policy.reach(Owner::Foreign);
        match Host::of(raw)? {
            Host::Ip(ip) if !policy.allows(ip, reach) => Err(BLOCKED),
            Host::Name(name) if is_localhost(&name) && !reach.loopback => Err(BLOCKED),
            _ => Ok(AgentUrl(raw.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a URL is to the workspace it is given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A URL an agent or an operator chose.
    Foreign,
    /// The loopback URL the host's own runtime assigned this workspace's agent (the process
    /// runtime's port, a Docker agent's published port).
    RuntimeLoopback,
    /// The runtime's own network name for this workspace (`http://ws-<id12>:8000` on Docker's
    /// network, the Kubernetes Service): resolvable only inside the runtime's network, where it
    /// may be a private address.
    RuntimeName,
}

/// Which non-public addresses a URL may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Reach {
    loopback: bool,
    private: bool,
}

/// What kind of address an IP is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    Private,
    /// No agent lives there, in any mode.
    Never,
}

fn class(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => class_v6(v6),
    }
}

fn class_v4(ip: Ipv4Addr) -> Class {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (127, ..) => Class::Loopback,
        (10, ..) | (192, 168, _) => Class::Private,
        (172, 16..=31, _) => Class::Private,
        // "This network" (0.0.0.0 connects to the host itself), link-local and cloud metadata,
        // carrier-grade NAT, IETF protocol assignments, documentation, benchmarking, then
        // multicast, 240/4 and broadcast.
        (0, ..) | (169, 254, _) | (100, 64..=127, _) | (192, 0, 0) => Class::Never,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) | (198, 18..=19, _) => Class::Never,
        (224.., ..) => Class::Never,
        _ => Class::Public,
    }
}

fn class_v6(ip: Ipv6Addr) -> Class {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return class_v4(v4);
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        [0, 0, 0, 0, 0, 0, 0, 1] => Class::Loopback,
        // The unspecified address, IPv4-compatible and IPv4-translated forms: reserved.
        [0, 0, 0, 0, ..] => Class::Never,
        // NAT64's well-known prefix carries an IPv4 address; its local-use prefix is private.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => class_v4(embedded(hi, lo)),
        [0x64, 0xff9b, 1, ..] => Class::Private,
        // 6to4 carries an IPv4 address in its prefix.
        [0x2002, hi, lo, ..] => class_v4(embedded(hi, lo)),
        // Teredo, documentation (2001:db8::/32, 3fff::/20), discard-only.
        [0x2001, 0, ..] | [0x2001, 0xdb8, ..] | [0x0100, 0, 0, 0, ..] => Class::Never,
        [first, ..] if first & 0xfff0 == 0x3ff0 => Class::Never,
        // Unique local (fc00::/7) and the deprecated site-local (fec0::/10).
        [first, ..] if first & 0xfe00 == 0xfc00 || first & 0xffc0 == 0xfec0 => Class::Private,
        // Link-local and multicast.
        [first, ..] if first & 0xffc0 == 0xfe80 || first & 0xff00 == 0xff00 => Class::Never,
        _ => Class::Public,
    }
}

/// `localhost` and its subdomains always mean this machine (RFC 6761), trailing dot or not.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.len() > 10 && name[name.len() - 10..].eq_ignore_ascii_case(".localhost")
}

/// The host of an agent URL, as the WHATWG parser reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    /// A domain, lowercased by the parser.
    Name(String),
}

impl Host {
    fn of(raw: &str) -> Result<Host, &'static str> {
        Host::parsed(raw).map(|(_, host)| host)
    }

    /// The host of `raw` with the URL as parsed, for a caller that goes on to use it.
    fn parsed(raw: &str) -> Result<(reqwest::Url, Host), &'static str> {
        if raw.len() > 2048
            || raw.chars().any(|c| c.is_control() || c.is_whitespace())
            || !(raw.starts_with("http://") || raw.starts_with("https://"))
        {
            return Err(INVALID);
        }
        let url = reqwest::Url::parse(raw).map_err(|_| INVALID)?;
        if !matches!(url.scheme(), "http" | "https")
            || !url.username().is_empty()
            || url.password().is_some()
            || url.port() == Some(0)
        {
            return Err(INVALID);
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(INVALID)?;
        // The parser turns every IPv4 spelling into dotted decimal and brackets IPv6, so a
        // domain never reads as an address here.
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse().map(Host::Ip).map_err(|_| INVALID)?
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(v4) => Host::Ip(IpAddr::V4(v4)),
                Err(_) => Host::Name(host.to_owned()),
            }
        };
        Ok((url, host))
    }
}

/// A private network an operator lets external agents live on in production
/// (`a2a.private_agent_networks`): `10.20.0.0/16`, `fd00:1::/64`, or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses a CIDR that lies wholly inside the private ranges.
    pub fn parse(entry: &str) -> Result<Network, String> {
        let entry = entry.trim();
        let (address, prefix) = entry.split_once('/').unwrap_or((entry, ""));
        let base: IpAddr = address
            .parse()
            .map_err(|_| format!("{entry:?} is not an address or CIDR"))?;
        let base = base.to_canonical();
        let bits = if base.is_ipv4() { 32 } else { 128 };
        let prefix = if prefix.is_empty() {
            bits
        } else {
            prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{entry:?} has no valid prefix length"))?
        };
        let network = Network { base, prefix };
        let (first, last) = network.bounds();
        if class(first) != Class::Private || class(last) != Class::Private {
            return Err(format!(
                "{entry:?} is not inside a private range (10/8, 172.16/12, 192.168/16, fc00::/7)"
            ));
        }
        Ok(network)
    }

    fn mask(&self) -> u128 {
        let bits = if self.base.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(bits - self.prefix);
        let all = if bits == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        all.checked_shl(host_bits).unwrap_or(0) & all
    }

    fn bounds(&self) -> (IpAddr, IpAddr) {
        let mask = self.mask();
        match self.base {
            IpAddr::V4(v4) => {
                let first = u128::from(u32::from(v4)) & mask;
                let last = first | (!mask & u128::from(u32::MAX));
                let v4 = |n: u128| IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(0)));
                (v4(first), v4(last))
            }
            IpAddr::V6(v6) => {
                let first = u128::from(v6) & mask;
                (
                    IpAddr::V6(Ipv6Addr::from(first)),
                    IpAddr::V6(Ipv6Addr::from(first | !mask)),
                )
            }
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let mask = self.mask();
        match (self.base, ip.to_canonical()) {
            (IpAddr::V4(base), IpAddr::V4(ip)) => {
                u128::from(u32::from(base)) & mask == u128::from(u32::from(ip)) & mask
            }
            (IpAddr::V6(base), IpAddr::V6(ip)) => u128::from(base) & mask == u128::from(ip) & mask,
            _ => false,
        }
    }
}

/// The host's agent-address policy: the mode, the operator's private networks, the runtime
/// names the proxy has vetted, and the spec's DNS answers.
#[derive(Debug)]
pub struct Policy {
    production: bool,
    networks: Vec<Network>,
    answers: DnsAnswers,
    /// Names the host's own runtime gave a workspace, seen by the proxy's check: the connect
    /// resolver lets them reach private addresses too.
    runtime_names: Mutex<HashSet<String>>,
}

impl Policy {
    /// The policy `config` asks for; fails on an `a2a.private_agent_networks` entry that is not
    /// a private network.
    pub fn new(config: &Config) -> anyhow::Result<Policy> {
        let networks = config
            .a2a
            .private_agent_networks
            .iter()
            .map(|entry| Network::parse(entry))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|why| anyhow::anyhow!("a2a.private_agent_networks: {why}"))?;
        Ok(Self::with(
            config.is_production(),
            networks,
            config.faults.dns.clone(),
        ))
    }

    fn with(production: bool, networks: Vec<Network>, answers: DnsAnswers) -> Policy {
        Policy {
            production,
            networks,
            answers,
            runtime_names: Mutex::new(HashSet::new()),
        }
    }

    fn reach(&self, owner: Owner) -> Reach {
        if !self.production {
            return Reach {
                loopback: true,
                private: true,
            };
        }
        Reach {
            loopback: owner == Owner::RuntimeLoopback,
            private: owner == Owner::RuntimeName,
        }
    }

    fn allows(&self, ip: IpAddr, reach: Reach) -> bool {
        match class(ip) {
            Class::Public => true,
            Class::Loopback => reach.loopback,
            Class::Private => reach.private || self.networks.iter().any(|n| n.contains(ip)),
            Class::Never => false,
        }
    }

    /// Whether every one of `addresses` is allowed; none is not.
    fn all_allowed(&self, addresses: &[IpAddr], reach: Reach) -> Result<(), &'static str> {
        if addresses.is_empty() {
            return Err(UNRESOLVABLE);
        }
        match addresses.iter().all(|ip| self.allows(*ip, reach)) {
            true => Ok(()),
            false => Err(BLOCKED),
        }
    }

    /// The check of registration and workspace creation. The runtime's own URLs for the
    /// workspace are accepted without resolving them; any other name must resolve, to allowed
    /// addresses only.
    pub async fn check(&self, raw: &str, owner: Owner) -> Result<AgentUrl, &'static str> {
        let reach = self.reach(owner);
        match Host::of(raw)? {
            Host::Ip(ip) if !self.allows(ip, reach) => return Err(BLOCKED),
            Host::Ip(_) => {}
            Host::Name(_) if owner != Owner::Foreign => {}
            Host::Name(name) if is_localhost(&name) && !reach.loopback => return Err(BLOCKED),
            Host::Name(name) => {
                let found = resolve(&self.answers, &name, Lookup::Check).await;
                self.all_allowed(&found, reach)?;
            }
        }
        Ok(AgentUrl(raw.to_owned()))
    }

    /// The proxy's check before it calls `raw`: like [`Policy::check`], except that every name
    /// is resolved, the runtime's own too. A runtime name that passes is remembered, so the
    /// connect resolver lets it reach the private addresses it has inside the runtime's network.
    /// The URL as parsed, which the proxy calls without parsing it again.
    pub async fn permits(&self, raw: &str, owner: Owner) -> Result<reqwest::Url, &'static str> {
        let reach = self.reach(owner);
        let (url, host) = Host::parsed(raw)?;
        match host {
            Host::Ip(ip) if self.allows(ip, reach) => Ok(url),
            Host::Ip(_) => Err(BLOCKED),
            Host::Name(name) if is_localhost(&name) && !reach.loopback => Err(BLOCKED),
            Host::Name(name) => {
                let found = resolve(&self.answers, &name, Lookup::Check).await;
                self.all_allowed(&found, reach)?;
                if owner == Owner::RuntimeName {
                    self.runtime_names
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key(&name));
                }
                Ok(url)
            }
        }
    }

    /// What the A2A client connects to for `name`: its addresses when every one passes.
    async fn connect_addresses(&self, name: &str) -> Result<Vec<IpAddr>, &'static str> {
        let runtime_name = self
            .runtime_names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key(name));
        let owner = if runtime_name {
            Owner::RuntimeName
        } else {
            Owner::Foreign
        };
        let reach = self.reach(owner);
        if is_localhost(name) && !reach.loopback {
            return Err(BLOCKED);
        }
        let found = resolve(&self.answers, name, Lookup::Connect).await;
        self.all_allowed(&found, reach)?;
        Ok(found)
    }
}

/// When a name is looked up: to check a URL (registration, the proxy's check) or to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Check,
    Connect,
}

/// The addresses `name` resolves to: the supplied answer when there is one, loopback for
/// `localhost` names (RFC 6761: never asked of DNS), else the machine's resolver. Empty when it
/// does not resolve.
async fn resolve(answers: &DnsAnswers, name: &str, lookup: Lookup) -> Vec<IpAddr> {
    // `localhost` names keep their meaning unless a spec answers them by name.
    let supplied = if is_localhost(name) && !answers.answers(name) {
        None
    } else {
        answers.get(name, lookup == Lookup::Connect)
    };
    if let Some(supplied) = supplied {
        return supplied.to_vec();
    }
    if is_localhost(name) {
        return vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()];
    }
    match tokio::net::lookup_host((name, 0)).await {
        Ok(found) => found.map(|a| a.ip()).collect(),
        Err(_) => Vec::new(),
    }
}

/// The A2A client's resolver: resolves a name when the client connects and refuses an answer
/// the policy refuses, so the addresses connected to are ones that pass, whatever the name
/// answered to the check before.
#[derive(Debug, Clone)]
pub struct Resolver {
    policy: Arc<Policy>,
}

impl Resolver {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            match policy.connect_addresses(name.as_str()).await {
                Ok(found) => {
                    let addrs: reqwest::dns::Addrs =
                        Box::new(found.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Err(why) => {
                    tracing::warn!(name = name.as_str(), why, "refusing to connect to an agent");
                    Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why).into())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn policy(production: bool, networks: &[&str], answers: DnsAnswers) -> Policy {
        let networks = networks
            .iter()
            .map(|n| Network::parse(n).unwrap())
            .collect();
        Policy::with(production, networks, answers)
    }

    #[test]
    fn every_spelling_of_an_address_is_read_as_the_client_reads_it() {
        for (raw, expected) in [
            ("http://2130706433", "127.0.0.1"),
            ("http://127.1", "127.0.0.1"),
            ("http://0x7f000001", "127.0.0.1"),
            ("http://0177.0.0.1", "127.0.0.1"),
            ("http://0x7f.1:80/", "127.0.0.1"),
            ("http://127%2E0%2E0%2E1", "127.0.0.1"),
            ("http://0", "0.0.0.0"),
            ("http://[::1]:9", "::1"),
            ("http://[0:0:0:0:0:0:0:1]", "::1"),
            ("http://[::ffff:127.0.0.1]", "::ffff:127.0.0.1"),
            ("http://[::ffff:7f00:1]", "::ffff:127.0.0.1"),
            ("https://10.0.0.1:8443/a2a?x#y", "10.0.0.1"),
        ] {
            assert_eq!(Host::of(raw), Ok(Host::Ip(ip(expected))), "{raw}");
        }
        assert_eq!(
            Host::of("http://LocalHost.:80"),
            Ok(Host::Name("localhost.".into()))
        );
        for invalid in [
            "ftp://x",
            "http://",
            "http:host",
            "HTTP://host",
            "http://user@host",
            "http://user:pw@host",
            "http://:pw@host",
            "http://host:0",
            "http://host:65536",
            "http://bad host",
            "http://host\n",
            "http://[fe80::1%25eth0]",
            "http://[::1",
            "http://256.0.0.1",
        ] {
            assert_eq!(Host::of(invalid), Err(INVALID), "{invalid}");
        }
        assert!(Host::of(&format!("http://h/{}", "a".repeat(2048))).is_err());
        assert!(Host::of("http://h:65535/").is_ok());
    }

    #[test]
    fn addresses_fall_into_the_policy_classes() {
        use Class::*;
        for (address, expected) in [
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:7f00:1::", Loopback),
            ("10.1.2.3", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.0.1", Private),
            ("fc00::1", Private),
            ("fdff:ffff::1", Private),
            ("::ffff:10.0.0.1", Private),
            ("::ffff:172.20.0.1", Private),
            ("::ffff:192.168.9.9", Private),
            ("64:ff9b::a00:1", Private),
            ("2002:c0a8:101::", Private),
            ("0.0.0.0", Never),
            ("0.1.2.3", Never),
            ("169.254.169.254", Never),
            ("::ffff:169.254.169.254", Never),
            ("fe80::1", Never),
            ("224.0.0.1", Never),
            ("ff02::1", Never),
            ("255.255.255.255", Never),
            ("240.0.0.1", Never),
            ("100.64.0.1", Never),
            ("100.127.255.255", Never),
            ("192.0.2.1", Never),
            ("198.51.100.1", Never),
            ("203.0.113.1", Never),
            ("198.18.0.1", Never),
            ("2001:db8::1", Never),
            ("3fff::1", Never),
            ("2001::1", Never),
            ("::", Never),
            ("::127.0.0.1", Never),
            ("::ffff:0:7f00:1", Never),
            ("8.8.8.8", Public),
            ("172.32.0.1", Public),
            ("100.128.0.1", Public),
            ("2606:4700::1111", Public),
            ("::ffff:8.8.8.8", Public),
        ] {
            assert_eq!(class(ip(address)), expected, "{address}");
        }
    }

    #[test]
    fn localhost_names_are_recognised_in_every_case_and_with_the_root_dot() {
        for name in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "a.localhost",
            "A.b.LocalHost.",
        ] {
            assert!(is_localhost(name), "{name}");
        }
        for name in ["notlocalhost", "localhost.example", "xlocalhost.", "local"] {
            assert!(!is_localhost(name), "{name}");
        }
    }

    #[tokio::test]
    async fn production_refuses_loopback_and_private_agent_urls_however_spelled() {
        let mut answers = DnsAnswers::default();
        answers
            .closed()
            .answer("loop.test", &[ip("127.0.0.1")])
            .answer("mapped.test", &[ip("::ffff:127.0.0.1")])
            .answer("inside.test", &[ip("10.9.8.7")])
            .answer("half.test", &[ip("8.8.8.8"), ip("192.168.1.1")])
            .answer("public.test", &[ip("8.8.8.8"), ip("2606:4700::1111")]);
        let prod = policy(true, &[], answers.clone());
        let dev = policy(false, &[], answers);
        for raw in [
            "http://2130706433",
            "http://127.1",
            "http://0x7f000001",
            "http://0177.0.0.1",
            "http://localhost.",
            "http://localhost:8000",
            "http://x.localhost",
            "http://[::1]",
            "http://[::ffff:127.0.0.1]",
            "http://[::ffff:7f00:1]",
            "http://[64:ff9b::7f00:1]",
            "http://10.0.0.1",
            "http://172.16.5.4",
            "http://192.168.0.1",
            "http://[fc00::1]",
            "http://[fd00::1]",
            "http://[::ffff:10.0.0.1]",
            "http://[::ffff:192.168.0.1]",
            "http://loop.test",
            "http://LOOP.test.",
            "http://mapped.test",
            "http://inside.test:8000",
            "http://half.test",
        ] {
            assert_eq!(prod.check(raw, Owner::Foreign).await, Err(BLOCKED), "{raw}");
            assert_eq!(
                prod.permits(raw, Owner::Foreign).await,
                Err(BLOCKED),
                "{raw}"
            );
            assert!(dev.check(raw, Owner::Foreign).await.is_ok(), "{raw}");
        }
        for raw in [
            "http://169.254.169.254/latest",
            "http://[fe80::1]",
            "http://[::ffff:169.254.169.254]",
            "http://0.0.0.0:80",
            "http://224.0.0.1",
            "http://100.64.0.1",
            "http://240.0.0.1",
            "http://255.255.255.255",
            "http://192.0.2.1",
            "http://[2001:db8::1]",
        ] {
            assert_eq!(dev.check(raw, Owner::Foreign).await, Err(BLOCKED), "{raw}");
            assert_eq!(prod.check(raw, Owner::RuntimeLoopback).await, Err(BLOCKED));
        }
        for policy in [&prod, &dev] {
            for raw in ["http://nowhere.test", "http://nowhere.test:80/a2a"] {
                assert_eq!(policy.check(raw, Owner::Foreign).await, Err(UNRESOLVABLE));
            }
            for raw in [
                "https://public.test/a2a",
                "http://8.8.8.8:8000",
                "http://[2606:4700::1111]",
            ] {
                assert!(policy.check(raw, Owner::Foreign).await.is_ok(), "{raw}");
            }
        }
    }

    #[tokio::test]
    async fn the_runtime_s_own_urls_pass_in_production() {
        let mut answers = DnsAnswers::default();
        answers
            .closed()
            .answer("ws-0123456789ab.molecule.svc", &[ip("10.96.0.12")]);
        let prod = policy(true, &[], answers);
        // Registration does not resolve the runtime's own names: they resolve inside its network.
        assert!(
            prod.check("http://127.0.0.1:8000", Owner::RuntimeLoopback)
                .await
                .is_ok()
        );
        assert!(
            prod.check("http://ws-0123456789ab:8000", Owner::RuntimeName)
                .await
                .is_ok()
        );
        assert_eq!(
            prod.check("http://ws-0123456789ab:8000", Owner::Foreign)
                .await,
            Err(UNRESOLVABLE)
        );
        // A runtime name may resolve to a private address, never to loopback; the proxy's check
        // teaches the connect resolver so.
        let service = "http://ws-0123456789ab.molecule.svc:8000";
        assert_eq!(
            prod.connect_addresses("ws-0123456789ab.molecule.svc").await,
            Err(BLOCKED)
        );
        assert!(prod.permits(service, Owner::RuntimeName).await.is_ok());
        assert_eq!(
            prod.connect_addresses("ws-0123456789ab.molecule.svc").await,
            Ok(vec![ip("10.96.0.12")])
        );
        assert_eq!(prod.permits(service, Owner::Foreign).await, Err(BLOCKED));
        assert_eq!(
            prod.permits("http://localhost:8000", Owner::RuntimeName)
                .await,
            Err(BLOCKED)
        );
        assert_eq!(
            prod.permits("http://127.0.0.1:8000", Owner::RuntimeName)
                .await,
            Err(BLOCKED)
        );
    }

    #[tokio::test]
    async fn the_connect_resolver_refuses_what_a_name_rebinds_to() {
        let mut answers = DnsAnswers::default();
        answers
            .closed()
            .rebind("rebind.test", &[ip("8.8.8.8")], &[ip("127.0.0.1")]);
        for production in [true, false] {
            let policy = policy(production, &[], answers.clone());
            assert!(
                policy
                    .permits("http://rebind.test:80", Owner::Foreign)
                    .await
                    .is_ok()
            );
            let connect = policy.connect_addresses("rebind.test").await;
            if production {
                assert_eq!(connect, Err(BLOCKED));
            } else {
                assert_eq!(connect, Ok(vec![ip("127.0.0.1")]));
            }
        }
        let prod = policy(true, &[], answers);
        assert_eq!(prod.connect_addresses("localhost").await, Err(BLOCKED));
        assert_eq!(
            prod.connect_addresses("nowhere.test").await,
            Err(UNRESOLVABLE)
        );
    }

    #[tokio::test]
    async fn operators_may_let_agents_live_on_listed_private_networks() {
        let mut answers = DnsAnswers::default();
        answers.closed().answer("lab.test", &[ip("10.20.3.4")]);
        let prod = policy(
            true,
            &["10.20.0.0/16", "fd00:1::/64", "192.168.7.9"],
            answers,
        );
        for raw in [
            "http://10.20.3.4:8000",
            "http://[::ffff:10.20.0.1]",
            "http://[fd00:1::5]",
            "http://192.168.7.9",
            "http://lab.test",
        ] {
            assert!(prod.check(raw, Owner::Foreign).await.is_ok(), "{raw}");
        }
        for raw in [
            "http://10.21.0.1",
            "http://192.168.7.10",
            "http://[fd00:2::1]",
            "http://127.0.0.1",
        ] {
            assert_eq!(prod.check(raw, Owner::Foreign).await, Err(BLOCKED), "{raw}");
        }
        for bad in [
            "10.0.0.0/7",
            "0.0.0.0/0",
            "127.0.0.0/8",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "8.8.8.0/24",
            "fc00::/6",
            "10.0.0.0/33",
            "10.0.0.0/x",
            "ten",
        ] {
            assert!(Network::parse(bad).is_err(), "{bad}");
        }
        assert!(Network::parse("172.16.0.0/12").is_ok());
        assert!(
            Network::parse("::ffff:10.0.0.0/104").is_err(),
            "mapped CIDRs are written as IPv4"
        );
    }

    #[test]
    fn the_plan_check_refuses_what_needs_no_dns() {
        let prod = Config {
            env: crate::config::Environment::Production,
            ..Config::default()
        };
        let dev = Config::default();
        assert_eq!(AgentUrl::parse("http://127.1", &prod), Err(BLOCKED));
        assert_eq!(AgentUrl::parse("http://localhost.", &prod), Err(BLOCKED));
        assert_eq!(AgentUrl::parse("http://10.0.0.1", &prod), Err(BLOCKED));
        assert!(AgentUrl::parse("http://10.0.0.1", &dev).is_ok());
        assert!(AgentUrl::parse("http://agent.example.com", &prod).is_ok());
        assert_eq!(
            AgentUrl::parse("http://169.254.169.254", &dev),
            Err(BLOCKED)
        );
        assert_eq!(AgentUrl::parse("http://u@agent", &dev), Err(INVALID));
    }
}
