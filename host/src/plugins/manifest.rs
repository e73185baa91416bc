//! Plugin manifests: the TOML file next to each component that says what the plugin is,
//! which contract (world) it implements, where it may connect and how it is limited.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

/// A contract a plugin can implement, by WIT package version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    PolicyV0_1,
    KmsConnectorV0_1,
}

impl World {
    pub const ALL: &[World] = &[World::PolicyV0_1, World::KmsConnectorV0_1];

    pub fn id(self) -> &'static str {
        match self {
            World::PolicyV0_1 => "keyward:plugin/policy@0.1.0",
            World::KmsConnectorV0_1 => "keyward:plugin/kms-connector@0.1.0",
        }
    }

    pub fn parse(s: &str) -> Option<World> {
        World::ALL.iter().copied().find(|w| w.id() == s)
    }

    pub fn is_policy(self) -> bool {
        matches!(self, World::PolicyV0_1)
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// The manifest as written on disk.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    version: String,
    world: String,
    component: Option<String>,
    description: Option<String>,
    #[serde(default)]
    capabilities: RawCapabilities,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    timeout_ms: Option<u64>,
    memory_mb: Option<u64>,
    fuel: Option<u64>,
    max_concurrency: Option<usize>,
    max_idle_instances: Option<usize>,
    max_instance_reuse: Option<u32>,
}

/// Sandbox limits of one plugin. Every call gets a wall-clock deadline, a memory ceiling and
/// an instruction (fuel) budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline per call (including instantiation and host calls).
    pub timeout: Duration,
    /// Ceiling on the instance's linear memory.
    pub memory_bytes: usize,
    /// Instruction budget per call.
    pub fuel: u64,
    /// Calls running at the same time; more wait for a slot.
    pub max_concurrency: usize,
    /// Warm instances kept per plugin (across configurations).
    pub max_idle_instances: usize,
    /// Calls an instance serves before it is retired.
    pub max_instance_reuse: u32,
}

impl Limits {
    /// Defaults per world: policies are quick, pure functions; connectors wait on the network
    /// and retry with backoff, so they get minutes, not milliseconds.
    pub fn default_for(world: World) -> Limits {
        if world.is_policy() {
            Limits {
                timeout: Duration::from_millis(500),
                memory_bytes: 32 << 20,
                fuel: 100_000_000,
                max_concurrency: 32,
                max_idle_instances: 16,
                max_instance_reuse: 10_000,
            }
        } else {
            Limits {
                timeout: Duration::from_secs(120),
                memory_bytes: 128 << 20,
                fuel: 20_000_000_000,
                max_concurrency: 32,
                max_idle_instances: 16,
                max_instance_reuse: 10_000,
            }
        }
    }

    pub fn memory_mb(&self) -> u64 {
        (self.memory_bytes >> 20) as u64
    }
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub world: World,
    /// File name of the component, relative to the manifest.
    pub component: String,
    pub description: Option<String>,
    pub allowed_outbound_hosts: Vec<HostPattern>,
    pub limits: Limits,
}

impl Manifest {
    /// Parses and validates a manifest. `default_stem` names the component when the manifest
    /// does not (`<stem>.wasm`).
    pub fn parse(text: &str, default_stem: &str) -> Result<Manifest, String> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| format!("malformed manifest: {}", e.message()))?;
        if !valid_name(&raw.name) {
            return Err(format!(
                "plugin name '{}' must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit",
                raw.name
            ));
        }
        let world = World::parse(&raw.world).ok_or_else(|| {
            let known: Vec<&str> = World::ALL.iter().map(|w| w.id()).collect();
            format!(
                "unknown world '{}' (this daemon knows {})",
                raw.world,
                known.join(", ")
            )
        })?;
        let component = raw
            .component
            .unwrap_or_else(|| format!("{default_stem}.wasm"));
        if component.contains('/') || component.contains('\\') || component.starts_with('.') {
            return Err(format!(
                "component '{component}' must be a file name next to the manifest"
            ));
        }
        let allowed_outbound_hosts = raw
            .capabilities
            .allowed_outbound_hosts
            .iter()
            .map(|h| HostPattern::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        if world.is_policy() && !allowed_outbound_hosts.is_empty() {
            return Err(
                "policy plugins cannot make network requests; remove allowed_outbound_hosts".into(),
            );
        }

        let mut limits = Limits::default_for(world);
        let l = raw.limits;
        if let Some(ms) = l.timeout_ms {
            check_range("limits.timeout_ms", ms, 1, 600_000)?;
            limits.timeout = Duration::from_millis(ms);
        }
        if let Some(mb) = l.memory_mb {
            check_range("limits.memory_mb", mb, 1, 4096)?;
            limits.memory_bytes = (mb as usize) << 20;
        }
        if let Some(fuel) = l.fuel {
            check_range("limits.fuel", fuel, 1_000, u64::MAX)?;
            limits.fuel = fuel;
        }
        if let Some(n) = l.max_concurrency {
            check_range("limits.max_concurrency", n as u64, 1, 1024)?;
            limits.max_concurrency = n;
        }
        if let Some(n) = l.max_idle_instances {
            check_range("limits.max_idle_instances", n as u64, 0, 1024)?;
            limits.max_idle_instances = n;
        }
        if let Some(n) = l.max_instance_reuse {
            check_range("limits.max_instance_reuse", n as u64, 1, u32::MAX as u64)?;
            limits.max_instance_reuse = n;
        }

        Ok(Manifest {
            name: raw.name,
            version: raw.version,
            world,
            component,
            description: raw.description,
            allowed_outbound_hosts,
            limits,
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

fn check_range(field: &str, v: u64, min: u64, max: u64) -> Result<(), String> {
    if v < min || v > max {
        return Err(format!("{field} = {v} is outside {min}..={max}"));
    }
    Ok(())
}

/// One entry of `allowed_outbound_hosts`: `[scheme://]host[:port]`, where host may start
/// with `*.` (any subdomain, not the domain itself) and port may be `*`. Without a scheme,
/// `https` is assumed; without a port, the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    scheme: String,
    host: HostMatch,
    port: PortMatch,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostMatch {
    Exact(String),
    /// `*.suffix`: stores `.suffix`.
    Subdomain(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortMatch {
    Default,
    Exact(u16),
    Any,
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let bad = |why: &str| format!("allowed_outbound_hosts entry '{text}': {why}");
        let (scheme, rest) = match text.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("https".to_string(), text),
        };
        if scheme != "https" && scheme != "http" {
            return Err(bad("only http and https are supported"));
        }
        if rest.contains('/') || rest.contains('?') || rest.contains('@') {
            return Err(bad(
                "give scheme, host and port only (no path, query or user)",
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            Some(_) => return Err(bad("IPv6 literals are not supported")),
            None => (rest, None),
        };
        let port = match port {
            None => PortMatch::Default,
            Some("*") => PortMatch::Any,
            Some(p) => PortMatch::Exact(p.parse().map_err(|_| bad("invalid port"))?),
        };
        let host = host.to_ascii_lowercase();
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            if suffix.is_empty() || suffix.contains('*') {
                return Err(bad("a wildcard must look like *.example.com"));
            }
            HostMatch::Subdomain(format!(".{suffix}"))
        } else if host.contains('*') {
            return Err(bad("a wildcard must look like *.example.com"));
        } else {
            HostMatch::Exact(host)
        };
        Ok(HostPattern {
            scheme,
            host,
            port,
            text: text.to_string(),
        })
    }

    /// The address this pattern names, when its host is an IP address rather than a name.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match &self.host {
            HostMatch::Exact(h) => h.parse().ok(),
            HostMatch::Subdomain(_) => None,
        }
    }

    /// Whether `url` may be requested under this pattern (scheme, host and port all match).
    pub fn matches(&self, url: &Url) -> bool {
        if url.scheme() != self.scheme {
            return false;
        }
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        let host_ok = match &self.host {
            HostMatch::Exact(h) => *h == host,
            HostMatch::Subdomain(suffix) => {
                host.len() > suffix.len() && host.ends_with(suffix.as_str())
            }
        };
        let port_ok = match self.port {
            PortMatch::Any => true,
            PortMatch::Exact(p) => url.port_or_known_default() == Some(p),
            PortMatch::Default => url.port().is_none() || url.port() == default_port(&self.scheme),
        };
        host_ok && port_ok
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn host_patterns_match_scheme_host_and_port() {
        let p = HostPattern::parse("https://*.managedhsm.azure.net").unwrap();
        assert!(p.matches(&url("https://contoso.managedhsm.azure.net/keys")));
        assert!(p.matches(&url("https://a.b.managedhsm.azure.net:443/")));
        assert!(
            !p.matches(&url("https://managedhsm.azure.net/")),
            "wildcard needs a subdomain"
        );
        assert!(
            !p.matches(&url("http://contoso.managedhsm.azure.net/")),
            "scheme is checked"
        );
        assert!(
            !p.matches(&url("https://contoso.managedhsm.azure.net:8443/")),
            "port is checked"
        );
        assert!(!p.matches(&url("https://evil.com/?x=.managedhsm.azure.net")));
        assert!(!p.matches(&url("https://contosomanagedhsm.azure.net/")));

        let p = HostPattern::parse("login.microsoftonline.com").unwrap();
        assert!(p.matches(&url(
            "https://login.microsoftonline.com/t/oauth2/v2.0/token"
        )));
        assert!(!p.matches(&url("https://login.microsoftonline.com.evil.com/")));

        let p = HostPattern::parse("https://127.0.0.1:*").unwrap();
        assert!(p.matches(&url("https://127.0.0.1:8443/")));
        assert!(!p.matches(&url("https://127.0.0.2:8443/")));

        let p = HostPattern::parse("https://*.localhost:8443").unwrap();
        assert!(p.matches(&url("https://hsm1.localhost:8443/")));
        assert!(!p.matches(&url("https://hsm1.localhost:9443/")));
    }

    #[test]
    fn bad_host_patterns_are_refused() {
        for bad in [
            "ftp://x.com",
            "https://x.com/path",
            "*foo.com",
            "https://",
            "x.com:port",
            "a.*.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn manifests_are_validated() {
        let ok = Manifest::parse(
            "name = \"p\"\nversion = \"1\"\nworld = \"keyward:plugin/policy@0.1.0\"\n[limits]\ntimeout_ms = 50\n",
            "p",
        )
        .unwrap();
        assert_eq!(ok.component, "p.wasm");
        assert_eq!(ok.limits.timeout, Duration::from_millis(50));

        let unknown_world =
            Manifest::parse("name = \"p\"\nversion = \"1\"\nworld = \"x:y/z@9\"\n", "p");
        assert!(
            unknown_world
                .unwrap_err()
                .contains("unknown world 'x:y/z@9'")
        );

        let typo = Manifest::parse(
            "name = \"p\"\nversion = \"1\"\nworld = \"keyward:plugin/policy@0.1.0\"\nlimts = 1\n",
            "p",
        );
        assert!(typo.unwrap_err().contains("unknown field `limts`"));

        let policy_with_net = Manifest::parse(
            "name = \"p\"\nversion = \"1\"\nworld = \"keyward:plugin/policy@0.1.0\"\n[capabilities]\nallowed_outbound_hosts = [\"x.com\"]\n",
            "p",
        );
        assert!(
            policy_with_net
                .unwrap_err()
                .contains("cannot make network requests")
        );

        let escape = Manifest::parse(
            "name = \"p\"\nversion = \"1\"\nworld = \"keyward:plugin/policy@0.1.0\"\ncomponent = \"../x.wasm\"\n",
            "p",
        );
        assert!(escape.is_err());
    }
}
