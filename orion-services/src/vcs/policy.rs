//! Where a task may point: which local directories and which remote hosts a task's `repo`
//! may name (`[security]`), checked by the gateway when a task is submitted and again by the
//! node before any agent touches the repository (a message on the bus may not have come
//! through a gateway).
//!
//! - A local path (or `file://` URL) must lie under one of `repo_roots` once made absolute
//!   and resolved through its symbolic links (a path that does not exist yet is taken as
//!   written, and may hold no `..`). Embedded mode allows any path; a cluster none until
//!   roots are configured. Nothing inside the node's own data directory (its database, work
//!   trees, clones, models) is ever allowed. (A repository may hold the data directory, as
//!   `orion run analyze --repo .` with `./.orion` does: the analyzer skips what git ignores.)
//! - A remote URL (`http(s)://`, `ssh://`, `git://`, `git@host:path`) must name a host of
//!   `repo_hosts`; with none configured (embedded mode) any host but loopback, link-local
//!   (which holds the clouds' metadata service), unspecified and metadata names. Those are
//!   refused unless listed by name. Hosts are compared as the URL standard reads them, so
//!   `http://2130706433/` and `http://0x7f.1/` are the loopback address they spell. A name is
//!   checked as written, not as it resolves: a DNS name pointing at a loopback address is not
//!   caught here (the sandbox's network isolation is the place for that).

use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

/// Why a task's `repo` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{repo}` is not allowed: {why}")]
pub struct RepoRefused {
    pub repo: String,
    pub why: String,
}

/// The rules for a task's `repo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoPolicy {
    /// Local directories a task may name; `None`: any.
    pub roots: Option<Vec<PathBuf>>,
    /// Remote hosts a task may name (`host` or `host:port`); `None`: any but the internal ones.
    pub hosts: Option<Vec<String>>,
    /// Never allowed, nor anything inside them: the node's own directories.
    pub denied: Vec<PathBuf>,
}

/// Names that mean this machine or a cloud's metadata service.
const INTERNAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
];

/// A remote's host, as the URL standard reads it, and its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteHost {
    Ip(IpAddr),
    Name(String),
}

/// Metadata and platform services outside the link-local range: Alibaba Cloud's, Oracle
/// Cloud's, Azure's wire server.
const METADATA_V4: &[[u8; 4]] = &[[100, 100, 100, 200], [192, 0, 0, 192], [168, 63, 129, 16]];

/// The schemes a remote may use.
const REMOTE_SCHEMES: &[&str] = &["http", "https", "ssh", "git"];

/// Whether `ip` is this machine, a link-local address (the metadata services live there), a
/// known metadata service, or no address at all.
fn internal_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || METADATA_V4.contains(&v4.octets())
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => internal_ip(IpAddr::V4(v4)),
            None => {
                v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_unicast_link_local()
                    // The metadata service's IPv6 address on AWS (fd00:ec2::254).
                    || v6.segments()[..2] == [0xfd00, 0x0ec2]
            }
        },
    }
}

/// The host of a remote URL or scp-like address, normalized as the URL standard does.
pub fn remote_host(repo: &str) -> Option<(RemoteHost, Option<u16>)> {
    let repo = repo.trim();
    let url = if let Some((scheme, rest)) = repo.split_once("://") {
        // Special schemes get the standard's host parsing; others are read as if they were
        // http, so that `ssh://2130706433/x` is the address it spells too.
        let scheme = scheme.to_ascii_lowercase();
        let as_http = match scheme.as_str() {
            "http" | "https" => repo.to_owned(),
            _ => format!("http://{rest}"),
        };
        let port = url::Url::parse(repo).ok().and_then(|u| u.port());
        url::Url::parse(&as_http).ok().map(|u| (u, port))
    } else {
        // git@host:path
        let (user_host, _) = repo.split_once(':')?;
        let host = user_host.rsplit_once('@').map_or(user_host, |(_, h)| h);
        url::Url::parse(&format!("http://{host}/"))
            .ok()
            .map(|u| (u, None))
    };
    let (url, port) = url?;
    let port = port.or(url.port());
    let host = match url.host()? {
        url::Host::Ipv4(v4) => RemoteHost::Ip(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => RemoteHost::Ip(IpAddr::V6(v6)),
        url::Host::Domain(name) => {
            RemoteHost::Name(name.trim_end_matches('.').to_ascii_lowercase())
        }
    };
    Some((host, port))
}

/// Whether `repo` names a remote (a URL other than `file://`, or `user@host:path`).
pub fn is_remote(repo: &str) -> bool {
    let repo = repo.trim();
    match repo.split_once("://") {
        Some((scheme, _)) => !scheme.eq_ignore_ascii_case("file"),
        None => {
            // scp-like: `host:path` with an `@` or no slash before the colon.
            repo.split_once(':')
                .is_some_and(|(before, _)| before.contains('@') && !before.contains('/'))
        }
    }
}

/// Refuses a remote whose host two readers could read differently: git (libgit2) ends the
/// host at the first `/` and takes what follows the last `@`, the URL standard also ends it at
/// `?`, `#` and `\` and decodes `%`; so none of these (nor white space or control characters)
/// may stand before the path, and the scheme must be one git speaks.
fn unambiguous(repo: &str) -> Result<(), String> {
    let repo = repo.trim();
    if repo.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it holds white space or control characters".into());
    }
    let authority = match repo.split_once("://") {
        Some((scheme, rest)) => {
            if !REMOTE_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "`{scheme}` is not a scheme Orion reaches ({})",
                    REMOTE_SCHEMES.join(", ")
                ));
            }
            rest.split('/').next().unwrap_or_default()
        }
        None => repo.split_once(':').map_or(repo, |(before, _)| before),
    };
    match authority
        .chars()
        .find(|c| matches!(c, '?' | '#' | '\\' | '%'))
    {
        Some(c) => Err(format!(
            "its address holds `{c}` before the path, which git and URL parsers read differently"
        )),
        None => Ok(()),
    }
}

/// The local path a `repo` names: a path as written, or a `file://` URL (no host but
/// `localhost`, no percent-encoding, which git would decode and this check would not).
pub(crate) fn local_path(repo: &str) -> Result<PathBuf, String> {
    let repo = repo.trim();
    if !repo
        .get(..5)
        .is_some_and(|s| s.eq_ignore_ascii_case("file:"))
    {
        return Ok(PathBuf::from(repo));
    }
    if repo.contains('%') {
        return Err("a file: URL with percent-encoding".into());
    }
    let url = url::Url::parse(repo).map_err(|e| format!("not a file URL: {e}"))?;
    if !repo[5..].starts_with("//") {
        return Err("a file: URL must be file:///path".into());
    }
    if url
        .host_str()
        .is_some_and(|h| !h.eq_ignore_ascii_case("localhost"))
    {
        return Err("a file: URL on another host".into());
    }
    url.to_file_path()
        .map_err(|()| "a file: URL that names no local path".to_owned())
}

/// `path` made absolute and free of `.` and `..`: resolved through its links where it exists,
/// else taken as written (where a `..` is refused, since it cannot be resolved safely).
fn resolved(path: &Path) -> Result<PathBuf, String> {
    if let Ok(real) = path.canonicalize() {
        return Ok(real);
    }
    if !path.is_absolute() {
        return Err("a relative path that does not exist".into());
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("a path with `..` that does not exist".into());
    }
    Ok(path.components().collect())
}

impl RepoPolicy {
    /// Embedded mode's: any local path and any host but the internal ones, never `denied`.
    pub fn open(denied: Vec<PathBuf>) -> Self {
        Self {
            roots: None,
            hosts: None,
            denied,
        }
    }

    /// Whether a task may point at `repo`.
    pub fn check(&self, repo: &str) -> Result<(), RepoRefused> {
        let refuse = |why: String| RepoRefused {
            repo: repo.to_owned(),
            why,
        };
        if is_remote(repo) {
            return self.check_remote(repo).map_err(refuse);
        }
        let path = local_path(repo).map_err(refuse)?;
        self.check_local(&path).map_err(refuse)
    }

    fn check_remote(&self, repo: &str) -> Result<(), String> {
        unambiguous(repo)?;
        let (host, port) = remote_host(repo).ok_or("its host cannot be read")?;
        let name = match &host {
            RemoteHost::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
            RemoteHost::Ip(ip) => ip.to_string(),
            RemoteHost::Name(name) => name.clone(),
        };
        let listed = self.hosts.as_ref().is_some_and(|hosts| {
            hosts.iter().any(|h| {
                let h = h.trim().to_ascii_lowercase();
                h == name || port.is_some_and(|p| h == format!("{name}:{p}"))
            })
        });
        if listed {
            return Ok(());
        }
        let internal = match &host {
            RemoteHost::Ip(ip) => internal_ip(*ip),
            RemoteHost::Name(n) => {
                INTERNAL_NAMES.contains(&n.as_str()) || n.ends_with(".localhost")
            }
        };
        if internal {
            return Err(format!(
                "{name} is this machine, link-local or a metadata service (list it in \
                 security.repo_hosts to allow it)"
            ));
        }
        match &self.hosts {
            None => Ok(()),
            Some(_) => Err(format!("host {name} is not in security.repo_hosts")),
        }
    }

    fn check_local(&self, path: &Path) -> Result<(), String> {
        // With no roots (embedded mode) a path that names nothing reaches nothing: the agent
        // says `repo_not_found`, which is the clearer answer.
        if self.roots.is_none() && !path.exists() {
            return Ok(());
        }
        let real = resolved(path)?;
        for denied in &self.denied {
            let denied = resolved(denied).unwrap_or_else(|_| denied.clone());
            if real.starts_with(&denied) {
                return Err(format!(
                    "{} is inside Orion's own data directory",
                    real.display()
                ));
            }
        }
        match &self.roots {
            None => Ok(()),
            Some(roots) => {
                let inside = roots
                    .iter()
                    .any(|root| resolved(root).is_ok_and(|root| real.starts_with(root)));
                if inside {
                    Ok(())
                } else {
                    Err(format!(
                        "{} is not under a directory of security.repo_roots",
                        real.display()
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(roots: &[&Path], hosts: &[&str]) -> RepoPolicy {
        RepoPolicy {
            roots: Some(roots.iter().map(|r| r.to_path_buf()).collect()),
            hosts: Some(hosts.iter().map(|h| h.to_string()).collect()),
            denied: vec![],
        }
    }

    #[test]
    fn internal_hosts_are_refused_however_they_are_spelled() {
        let open = RepoPolicy::open(vec![]);
        for repo in [
            "http://127.0.0.1/x.git",
            "http://2130706433/x.git",
            "http://0x7f.1/x.git",
            "http://0177.0.0.1/x.git",
            "http://127.1/x.git",
            "https://LOCALHOST/x.git",
            "http://localhost./x.git",
            "http://api.localhost/x.git",
            "http://[::1]/x.git",
            "http://[::ffff:127.0.0.1]/x.git",
            "http://[::ffff:7f00:1]/x.git",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
            "http://metadata.google.internal/computeMetadata/v1/",
            "http://0.0.0.0/x.git",
            "http://[fe80::1]/x.git",
            "ssh://git@127.0.0.1:2222/x.git",
            "ssh://2130706433/x.git",
            "git://localhost/x.git",
            "git@localhost:team/x.git",
            "git@169.254.169.254:x.git",
            "http://user:pass@127.0.0.1/x.git",
            "HTTP://127.0.0.1/x.git",
            // Read one way by the URL standard, another by git.
            "http://github.com?@127.0.0.1:8080/x.git",
            "http://github.com#@127.0.0.1/x.git",
            "http://github.com\\@127.0.0.1/x.git",
            "http://git%68ub.com/x.git",
            "http://100.100.100.200/latest/meta-data/",
            "http://192.0.0.192/",
            "http://168.63.129.16/",
            "ftp://github.com/x.git",
            "http://github.com/x .git",
        ] {
            assert!(open.check(repo).is_err(), "{repo} was allowed");
        }
        for repo in [
            "https://github.com/acme/widgets.git",
            "git@github.com:acme/widgets.git",
            "ssh://git@gitlab.example.com:2222/acme/widgets.git",
            "http://10.1.2.3/x.git",
        ] {
            assert_eq!(open.check(repo), Ok(()), "{repo}");
        }
    }

    #[test]
    fn listed_hosts_alone_are_allowed_in_a_cluster() {
        let policy = cluster(&[], &["git.corp", "127.0.0.1:8080"]);
        for repo in [
            "http://git.corp?@evil.net/x.git",
            "http://git.corp#@evil.net/x.git",
            "http://git.corp\\@evil.net/x.git",
        ] {
            assert!(policy.check(repo).is_err(), "{repo} was allowed");
        }
        assert_eq!(policy.check("https://git.corp/team/x.git"), Ok(()));
        assert_eq!(policy.check("https://GIT.CORP./team/x.git"), Ok(()));
        assert_eq!(policy.check("http://127.0.0.1:8080/x.git"), Ok(()));
        for repo in [
            "https://git.corp.evil.net/x.git",
            "https://git.corp@evil.net/x.git",
            "https://evil.net/git.corp/x.git",
            "http://127.0.0.1:9090/x.git",
            "https://github.com/acme/x.git",
        ] {
            assert!(policy.check(repo).is_err(), "{repo} was allowed");
        }
        let none = cluster(&[], &[]);
        assert!(none.check("https://github.com/acme/x.git").is_err());
    }

    #[test]
    fn local_paths_must_lie_under_a_root_however_they_are_spelled() {
        let base = std::env::temp_dir().join(format!("orion-policy-{}", std::process::id()));
        let root = base.join("repos");
        let outside = base.join("secret");
        std::fs::create_dir_all(root.join("a")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        let link = root.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let policy = cluster(&[&root], &[]);
        let ok = root.join("a").to_string_lossy().into_owned();
        assert_eq!(policy.check(&ok), Ok(()));
        assert_eq!(policy.check(&format!("file://{ok}")), Ok(()));
        assert_eq!(policy.check(&format!("file://localhost{ok}")), Ok(()));
        assert_eq!(policy.check(&format!("{ok}/../a")), Ok(()));
        for repo in [
            outside.to_string_lossy().into_owned(),
            format!("{}/../secret", root.display()),
            format!("{}/a/../../secret", root.display()),
            format!("{}/./a/../../secret", root.display()),
            format!("{}/nothing/../../secret", root.display()),
            link.to_string_lossy().into_owned(),
            format!("file://{}", outside.display()),
            format!("file://{}/%2e%2e/secret", root.display()),
            format!("file://{}/a/%2E%2E/%2e%2e/secret", root.display()),
            format!("file://evil.net{}", root.join("a").display()),
            format!("file:{}", root.join("a").display()),
            "relative/path".to_owned(),
            "/".to_owned(),
        ] {
            assert!(policy.check(&repo).is_err(), "{repo} was allowed");
        }
        // Nothing inside the node's own data directory is allowed, however it is spelled.
        let open = RepoPolicy::open(vec![root.clone()]);
        assert!(open.check(&ok).is_err());
        assert!(
            open.check(&format!("{}/../repos/a", outside.display()))
                .is_err()
        );
        assert!(
            open.check(&link.join("..").to_string_lossy()).is_ok(),
            "through the link, `..` is its target's parent"
        );
        assert_eq!(open.check(&outside.to_string_lossy()), Ok(()));
        // Embedded, a path that names nothing is left for the agent to report as missing.
        assert_eq!(RepoPolicy::open(vec![]).check("no/such/repo"), Ok(()));
        // With no roots configured in a cluster, no local path at all.
        assert!(cluster(&[], &[]).check(&ok).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
