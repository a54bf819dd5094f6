//! How remotes over TLS and SSH are trusted (`[vcs]`).
//!
//! - `https://`: the system's trust store (found by `openssl-probe`; libgit2 is built with a
//!   vendored OpenSSL), and the authorities of `vcs.ca_file`: a server certificate one of them
//!   signed (directly: list an intermediate authority in the file too), valid now and naming
//!   the host, is taken (checked with `rustls-webpki`). A server whose certificate no trusted
//!   authority signed is refused.
//! - `ssh://` and `user@host:path`: the server's host key must be one `vcs.known_hosts` (the
//!   OpenSSH format: `host[,host…] type base64-key`, or `[host]:port`) lists for its host; an
//!   unknown host is refused, unless `vcs.trust_unknown_hosts` is set (trust on first use, for
//!   trial set-ups only: the first key a host shows is held to for the life of the process).
//!   Hashed host names (`|1|…`), wildcards and `@cert-authority`/`@revoked` lines are not read
//!   (their hosts are refused; with trust on first use the file is refused at start): write the
//!   file with `ssh-keyscan` without `-H`. The port is not told apart: an entry for
//!   `[host]:port` stands for the host on any port. The file is read at start.
//!
//! [`set_transport`] applies the settings once for the process; every clone, fetch and push
//! checks certificates and host keys through [`check_certificate`].

use std::path::PathBuf;
use std::sync::RwLock;

use base64::Engine;
use git2::CertificateCheckStatus;
use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::VcsError;

/// `[vcs]`: what a node trusts of the remotes it talks to.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct TransportConfig {
    /// PEM certificates trusted for `https://` besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The SSH host keys trusted, in OpenSSH's `known_hosts` format.
    pub known_hosts: Option<PathBuf>,
    /// Accept an SSH host key that `known_hosts` does not list (trust on first use).
    #[serde(default)]
    pub trust_unknown_hosts: bool,
}

/// A host key `known_hosts` lists: the host patterns, the key type and the key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KnownHost {
    hosts: Vec<String>,
    key: Vec<u8>,
}

struct Trust {
    known: Vec<KnownHost>,
    trust_unknown: bool,
    /// The certificates of `vcs.ca_file`, as trust anchors.
    authorities: Vec<TrustAnchor<'static>>,
}

static TRUST: RwLock<Option<Trust>> = RwLock::new(None);

/// Applies `config` to the process: the extra certificate authorities, and the host keys
/// (read now; a file that does not read is an error at start, not at the first push).
pub fn set_transport(config: &TransportConfig) -> Result<(), VcsError> {
    let authorities = match &config.ca_file {
        Some(ca) => {
            let pem = std::fs::read_to_string(ca)
                .map_err(|e| VcsError::Operation(format!("vcs.ca_file {}: {e}", ca.display())))?;
            let found = pem_certificates(&pem);
            if found.is_empty() {
                return Err(VcsError::Operation(format!(
                    "vcs.ca_file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            // Read into trust anchors once, not at every check.
            found
                .iter()
                .filter_map(|ca| {
                    webpki::anchor_from_trusted_cert(&CertificateDer::from(ca.as_slice()))
                        .ok()
                        .map(|a| a.to_owned())
                })
                .collect()
        }
        None => Vec::new(),
    };
    let known = match &config.known_hosts {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                VcsError::Operation(format!("vcs.known_hosts {}: {e}", path.display()))
            })?;
            let unread = unread_lines(&text);
            // A host listed in a way Orion does not read would count as unknown, and trust on
            // first use would then take any key for it: refused at start instead.
            if config.trust_unknown_hosts && unread > 0 {
                return Err(VcsError::Operation(format!(
                    "vcs.known_hosts {} has {unread} lines Orion does not read (hashed or \
                     wildcard names, @revoked or @cert-authority markers); with \
                     vcs.trust_unknown_hosts their hosts would take any key",
                    path.display()
                )));
            }
            if unread > 0 {
                tracing::warn!(path = %path.display(), unread, "lines of vcs.known_hosts that are not read: their hosts are refused");
            }
            parse_known_hosts(&text)
        }
        None => Vec::new(),
    };
    *TRUST.write().unwrap_or_else(|e| e.into_inner()) = Some(Trust {
        known,
        trust_unknown: config.trust_unknown_hosts,
        authorities,
    });
    Ok(())
}

/// The DER of each `CERTIFICATE` block of a PEM text.
fn pem_certificates(pem: &str) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    let mut block: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        match (&mut block, line) {
            (None, "-----BEGIN CERTIFICATE-----") => block = Some(String::new()),
            (Some(text), "-----END CERTIFICATE-----") => {
                if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(&*text) {
                    found.push(der);
                }
                block = None;
            }
            (Some(text), line) => text.push_str(line),
            (None, _) => {}
        }
    }
    found
}

/// Whether the server certificate `der` was signed by one of `anchors`, is valid now for
/// serving TLS, and names `host`.
fn signed_by(anchors: &[TrustAnchor<'static>], der: &[u8], host: &str) -> Result<(), String> {
    use rustls_pki_types::{ServerName, UnixTime};
    let der = CertificateDer::from(der);
    let leaf = webpki::EndEntityCert::try_from(&der).map_err(|e| e.to_string())?;
    leaf.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|e| e.to_string())
}

/// How many lines of a `known_hosts` file hold an entry Orion does not read: markers, hashed
/// or wildcard names, or lines that do not parse.
fn unread_lines(text: &str) -> usize {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            let hosts = l.split_whitespace().next().unwrap_or_default();
            l.starts_with('@')
                || hosts.contains(['|', '*', '?', '!'])
                || parse_known_hosts(l).is_empty()
        })
        .count()
}

/// The entries of a `known_hosts` file that Orion reads (see the module's documentation).
fn parse_known_hosts(text: &str) -> Vec<KnownHost> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('@'))
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let hosts = fields.next()?;
            let _kind = fields.next()?;
            let key = base64::engine::general_purpose::STANDARD
                .decode(fields.next()?)
                .ok()?;
            let hosts = hosts
                .split(',')
                .filter(|h| !h.starts_with('|'))
                .map(|h| {
                    // `[host]:port` names the host.
                    h.strip_prefix('[')
                        .and_then(|h| h.split_once("]:"))
                        .map_or(h, |(host, _)| host)
                        .to_ascii_lowercase()
                })
                .collect::<Vec<_>>();
            (!hosts.is_empty()).then_some(KnownHost { hosts, key })
        })
        .collect()
}

/// Host keys taken on first use (`vcs.trust_unknown_hosts`), by host: from then on the host is
/// held to that key, as if it were listed.
static FIRST_USE: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Whether the SSH host key `key` of `host` may be trusted.
fn host_key_trusted(trust: &Trust, host: &str, key: &[u8]) -> Result<(), String> {
    // An IPv6 address of an scp-like address comes in brackets.
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let listed: Vec<&KnownHost> = trust
        .known
        .iter()
        .filter(|k| k.hosts.contains(&host))
        .collect();
    if listed.iter().any(|k| k.key == key) {
        return Ok(());
    }
    let changed = || {
        format!(
            "the host key of {host} is not among the keys vcs.known_hosts lists for it: \
             refused (if the server's key changed, update vcs.known_hosts and restart)"
        )
    };
    if !listed.is_empty() {
        return Err(changed());
    }
    if trust.trust_unknown {
        let mut first = FIRST_USE.lock().unwrap_or_else(|e| e.into_inner());
        return match first.get(&host) {
            Some(taken) if taken.as_slice() == key => Ok(()),
            Some(_) => Err(changed()),
            None => {
                tracing::warn!(%host, "trusting an SSH host key on first use (vcs.trust_unknown_hosts); it is held to it from now on");
                first.insert(host, key.to_vec());
                Ok(())
            }
        };
    }
    Err(format!(
        "{host} is not in vcs.known_hosts: its host key cannot be checked, so it is refused \
         (add it: ssh-keyscan -p <port> {host} >> known_hosts)"
    ))
}

/// libgit2's certificate check: TLS certificates as OpenSSL verified them against the trusted
/// authorities; SSH host keys against `vcs.known_hosts`.
pub(crate) fn check_certificate(
    cert: &git2::cert::Cert<'_>,
    host: &str,
) -> Result<CertificateCheckStatus, git2::Error> {
    let trust = TRUST.read().unwrap_or_else(|e| e.into_inner());
    if let Some(x509) = cert.as_x509() {
        // An authority of vcs.ca_file vouches for it, or OpenSSL's verdict on the system's
        // trust store stands.
        let authorities = trust.as_ref().map_or(&[][..], |t| &t.authorities[..]);
        if !authorities.is_empty() {
            match signed_by(authorities, x509.data(), host) {
                Ok(()) => return Ok(CertificateCheckStatus::CertificateOk),
                Err(why) => {
                    tracing::debug!(%host, %why, "not a certificate of vcs.ca_file's authorities")
                }
            }
        }
        return Ok(CertificateCheckStatus::CertificatePassthrough);
    }
    let Some(hostkey) = cert.as_hostkey() else {
        return Ok(CertificateCheckStatus::CertificatePassthrough);
    };
    let Some(key) = hostkey.hostkey() else {
        return Err(git2::Error::from_str(
            "the SSH server's host key could not be read",
        ));
    };
    let unset = Trust {
        known: Vec::new(),
        trust_unknown: false,
        authorities: Vec::new(),
    };
    host_key_trusted(trust.as_ref().unwrap_or(&unset), host, key)
        .map(|()| CertificateCheckStatus::CertificateOk)
        .map_err(|why| {
            // libgit2 reports its own words for a refused host key; the reason is kept for
            // the failure to say ([`refusal`]).
            REFUSED.with(|r| *r.borrow_mut() = Some(why.clone()));
            git2::Error::from_str(&why)
        })
}

thread_local! {
    /// Why this thread's last host key was refused, until it is read.
    static REFUSED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Why the host key of this thread's last transfer was refused, if it was (read once).
pub(crate) fn refusal() -> Option<String> {
    REFUSED.with(|r| r.borrow_mut().take())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn trust(text: &str, trust_unknown: bool) -> Trust {
        Trust {
            known: parse_known_hosts(text),
            trust_unknown,
            authorities: Vec::new(),
        }
    }

    #[test]
    fn a_host_key_is_trusted_only_when_listed_for_its_host() {
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap();
        let listed = trust(
            &format!(
                "# comment\ngit.corp,10.0.0.7 ssh-ed25519 {KEY}\n[127.0.0.1]:2222 ssh-ed25519 {KEY} me@box\n\
                 |1|hashed|entry ssh-ed25519 {KEY}\n@revoked other ssh-ed25519 {KEY}\nbroken line\n"
            ),
            false,
        );
        for host in ["git.corp", "GIT.CORP", "10.0.0.7", "127.0.0.1"] {
            assert_eq!(host_key_trusted(&listed, host, &key), Ok(()), "{host}");
        }
        let other = vec![1u8; key.len()];
        let changed = host_key_trusted(&listed, "git.corp", &other).unwrap_err();
        assert!(
            changed.contains("is not among the keys vcs.known_hosts lists"),
            "{changed}"
        );
        for host in ["evil.net", "git.corp.evil.net", "other", "hashed"] {
            let unknown = host_key_trusted(&listed, host, &key).unwrap_err();
            assert!(unknown.contains("is not in vcs.known_hosts"), "{unknown}");
        }
        // Trust on first use takes an unknown host's key once, and holds the host to it; it
        // never takes a changed key of a listed host.
        let tofu = trust(&format!("git.corp ssh-ed25519 {KEY}\n"), true);
        assert_eq!(host_key_trusted(&tofu, "new.host", &other), Ok(()));
        assert_eq!(host_key_trusted(&tofu, "new.host", &other), Ok(()));
        assert!(
            host_key_trusted(&tofu, "new.host", &key).is_err(),
            "a second key"
        );
        assert!(host_key_trusted(&tofu, "git.corp", &other).is_err());
        // An IPv6 address comes in brackets from an scp-like address.
        let v6 = trust(&format!("fd00::5 ssh-ed25519 {KEY}\n"), false);
        assert_eq!(host_key_trusted(&v6, "[fd00::5]", &key), Ok(()));
        // Lines not read are counted, so that trust on first use can refuse to start.
        let unread = format!(
            "# c\n|1|a|b ssh-ed25519 {KEY}\n*.corp ssh-ed25519 {KEY}\n@revoked x ssh-ed25519 {KEY}\nbroken\ngit.corp ssh-ed25519 {KEY}\n"
        );
        assert_eq!(unread_lines(&unread), 4);
    }
}
