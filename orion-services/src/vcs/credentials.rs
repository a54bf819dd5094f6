//! Credentials for private remotes: given to libgit2 when a remote asks (a token as HTTP
//! basic over `https://`, a private key over SSH), from the store's sealed records, opened
//! only here. Certificates and host keys are checked by [`super::transport`].
//!
//! A record applies to a remote by the parsed URL, never by text: the same scheme, host and
//! port, and the record's path a prefix of the remote's on segment boundaries
//! ([`credential_applies`]), so a record for `http://git.corp` is never sent to
//! `http://git.corp.evil.net` or `http://git.corp@evil.net`. Over plain `http://` no
//! credential is sent at all unless its host is in `security.insecure_hosts`.
//!
//! The node registers a [`CredentialCache`] with [`set_credential_source`]; when a remote asks
//! for a credential, it reads the sealed records from the store as they are then (a deleted
//! one is never used) and opens the one that applies, on git's blocking thread. A remote that
//! refuses the credential is asked once, not in a loop; a redirect is answered for the URL
//! git is talking to, not the one it was given.

use std::sync::{Arc, RwLock};

use git2::{Cred, CredentialType, RemoteCallbacks};

use crate::secrets::{ExposeSecret, Sealer};
use crate::store::Store;

struct Entry {
    prefix: String,
    username: String,
    sealed: String,
}

/// Whether a credential stored for `prefix` applies to the remote `url`: both parse as URLs
/// with the same scheme, host and port (the scheme's default when none is written), and the
/// prefix's path segments begin the remote's. Anything that does not parse applies to nothing.
pub fn credential_applies(prefix: &str, url: &str) -> bool {
    let (Ok(prefix), Ok(url)) = (
        url::Url::parse(&as_url(prefix)),
        url::Url::parse(&as_url(url)),
    ) else {
        return false;
    };
    // `ssh` is no special scheme to the URL standard: its host is not lowercased and its
    // default port not known, so both are done here.
    let host = |u: &url::Url| u.host_str().map(str::to_ascii_lowercase);
    let port = |u: &url::Url| {
        u.port_or_known_default()
            .or((u.scheme() == "ssh").then_some(22))
    };
    if prefix.scheme() != url.scheme()
        || host(&prefix) != host(&url)
        || prefix.host().is_none()
        || port(&prefix) != port(&url)
    {
        return false;
    }
    let segments = |u: &url::Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let (want, have) = (segments(&prefix), segments(&url));
    have.len() >= want.len() && have[..want.len()] == want[..]
}

/// A remote as a URL: an scp-like address (`user@host:path`) as the `ssh://` URL it means.
pub fn as_url(remote: &str) -> String {
    let remote = remote.trim();
    if remote.contains("://") || !super::is_remote(remote) {
        return remote.to_owned();
    }
    match remote.split_once(':') {
        Some((user_host, path)) => format!("ssh://{user_host}/{}", path.trim_start_matches('/')),
        None => remote.to_owned(),
    }
}

/// The sealed credentials of the store, in memory; opened one at a time when a remote asks.
pub struct CredentialCache {
    entries: RwLock<Vec<Entry>>,
    /// Hosts a credential may be sent to over plain HTTP (`security.insecure_hosts`).
    insecure_hosts: Vec<String>,
    sealer: Sealer,
    store: Arc<dyn Store>,
    /// The runtime that reads the store for a blocking git thread.
    runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialCache")
    }
}

impl CredentialCache {
    /// A cache of `store`'s credentials, sent over plain HTTP to `insecure_hosts` only; call
    /// it on the runtime that is to read the store.
    pub fn new(sealer: Sealer, store: Arc<dyn Store>, insecure_hosts: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            entries: RwLock::new(Vec::new()),
            insecure_hosts: insecure_hosts
                .into_iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            sealer,
            store,
            runtime: tokio::runtime::Handle::current(),
        })
    }

    /// Reads the store's credentials (still sealed) into the cache.
    pub async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let fresh = self
            .store
            .sealed_credentials()
            .await?
            .into_iter()
            .map(|(c, sealed)| Entry {
                prefix: c.repo_prefix,
                username: c.username,
                sealed,
            })
            .collect();
        *self.entries.write().expect("not poisoned") = fresh;
        Ok(())
    }

    /// [`Self::lookup`] on the store as it is now: a credential deleted a moment ago is not
    /// used, one stored a moment ago is (only remotes that ask for a credential get here, so
    /// the read is rare). Where the store cannot be read, no credential is given. Blocks: for
    /// git's threads, never the runtime's.
    fn lookup_or_read(&self, url: &str) -> Option<(String, String)> {
        if let Err(e) = self.runtime.block_on(self.refresh()) {
            tracing::warn!(error = %e, "could not read repository credentials: none is given");
            return None;
        }
        self.lookup(url)
    }

    /// The username and secret for `url`: the record with the longest prefix that applies
    /// ([`credential_applies`]); none over plain HTTP to a host not listed as insecure.
    pub fn lookup(&self, url: &str) -> Option<(String, String)> {
        let parsed = url::Url::parse(&as_url(url)).ok()?;
        if parsed.scheme() == "http" {
            let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
            let with_port = parsed.port().map(|p| format!("{host}:{p}"));
            let listed = self
                .insecure_hosts
                .iter()
                .any(|h| *h == host || Some(h) == with_port.as_ref());
            if !listed {
                tracing::warn!(
                    host = %host,
                    "a credential is not sent over plain HTTP to a host not in security.insecure_hosts"
                );
                return None;
            }
        }
        let entries = self.entries.read().expect("not poisoned");
        let entry = entries
            .iter()
            .filter(|e| credential_applies(&e.prefix, url))
            .max_by_key(|e| e.prefix.len())?;
        match self.sealer.open(&entry.sealed) {
            Ok(secret) => Some((entry.username.clone(), secret.expose_secret().to_owned())),
            Err(e) => {
                tracing::warn!(error = %e, prefix = %entry.prefix, "a credential does not open");
                None
            }
        }
    }
}

static SOURCE: RwLock<Option<Arc<CredentialCache>>> = RwLock::new(None);

/// Makes `cache` the process's source of repository credentials.
pub fn set_credential_source(cache: Arc<CredentialCache>) {
    *SOURCE.write().expect("not poisoned") = Some(cache);
}

/// Options for a fetch or clone: no redirect to another host is followed (libgit2 still
/// follows one to another port or path of the same host), and a credential challenge is
/// answered for the URL libgit2 is talking to after any redirect, never for the one it was
/// given, so a redirect cannot carry a credential to a server it was not stored for.
pub(crate) fn fetch_options() -> git2::FetchOptions<'static> {
    let mut options = git2::FetchOptions::new();
    options
        .remote_callbacks(callbacks())
        .follow_redirects(git2::RemoteRedirect::None);
    options
}

/// Options for a push, as [`fetch_options`]; `refused` hears of each ref the remote did not
/// update, with its reason.
pub(crate) fn push_options<'a>(
    refused: impl FnMut(&str, Option<&str>) -> Result<(), git2::Error> + 'a,
) -> git2::PushOptions<'a> {
    let mut callbacks = callbacks();
    callbacks.push_update_reference(refused);
    let mut options = git2::PushOptions::new();
    options
        .remote_callbacks(callbacks)
        .follow_redirects(git2::RemoteRedirect::None);
    options
}

/// Callbacks that answer a credential challenge once, reading the credential only when the
/// remote asks (public remotes never do), for the URL libgit2 names in the challenge: the
/// one it is actually talking to.
fn callbacks() -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let source = SOURCE.read().expect("not poisoned").clone();
    let mut asked = false;
    // A refusal noted by an earlier transfer on this thread is not this one's.
    let _ = super::transport::refusal();
    callbacks.certificate_check(super::transport::check_certificate);
    callbacks.credentials(move |url, username_from_url, allowed| {
        let found = if asked {
            None
        } else {
            source.as_ref().and_then(|cache| cache.lookup_or_read(url))
        };
        let Some((user, secret)) = found else {
            return Err(git2::Error::from_str(
                "the remote wants credentials, and none (or none it accepts) are stored for it \
                 (POST /v1/credentials)",
            ));
        };
        // SSH asks for the user name first where the URL names none; that is not the secret.
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(&user);
        }
        asked = true;
        // What the secret is follows from the remote's scheme, never from what the server
        // offers: a private key goes only as a key over SSH (an SSH server that asks for a
        // password gets nothing), a token only as HTTP basic.
        let ssh = url::Url::parse(&as_url(url)).is_ok_and(|u| u.scheme() == "ssh");
        if ssh && allowed.contains(CredentialType::SSH_KEY) {
            // Over SSH the stored secret is a private key (PEM or OpenSSH format).
            Cred::ssh_key_from_memory(username_from_url.unwrap_or(&user), None, &secret, None)
        } else if !ssh && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            Cred::userpass_plaintext(&user, &secret)
        } else {
            Err(git2::Error::from_str(
                "the remote asks for a kind of credential Orion does not hold",
            ))
        }
    });
    callbacks
}

#[cfg(test)]
mod tests {
    use super::credential_applies;

    #[test]
    fn a_credential_applies_by_scheme_host_port_and_whole_path_segments() {
        let prefix = "http://git.corp";
        for url in [
            "http://git.corp/team/x.git",
            "http://git.corp:80/team/x.git",
            "http://GIT.CORP/x.git",
            "http://user@git.corp/x.git",
        ] {
            assert!(credential_applies(prefix, url), "{url}");
        }
        for url in [
            "http://git.corp.evil.net/x.git",
            "http://git.corp@evil.net/x.git",
            "http://git.corp:8080/x.git",
            "https://git.corp/x.git",
            "http://evil.net/http://git.corp/x.git",
            "http://git.corpx/x.git",
            "not a url",
        ] {
            assert!(!credential_applies(prefix, url), "{url}");
        }
        let team = "https://git.corp/team/";
        assert!(credential_applies(team, "https://git.corp/team/x.git"));
        assert!(credential_applies(
            "https://git.corp/team",
            "https://git.corp/team/x.git"
        ));
        assert!(!credential_applies(team, "https://git.corp/teamevil/x.git"));
        assert!(!credential_applies(team, "https://git.corp/other/x.git"));
        assert!(!credential_applies(
            team,
            "https://git.corp/team/../other/x.git"
        ));
        assert!(
            !credential_applies("/srv/git", "/srv/git/x.git"),
            "paths are no URLs"
        );
        // An scp-like address is the ssh:// URL it means, port 22 and all.
        assert!(credential_applies(
            "ssh://git.corp/team/",
            "git@git.corp:team/x.git"
        ));
        assert!(!credential_applies(
            "ssh://git.corp:2222/",
            "git@git.corp:team/x.git"
        ));
        assert!(!credential_applies(
            "ssh://git.corp/",
            "git@git.corp.evil.net:x.git"
        ));
        assert!(credential_applies(
            "ssh://Git.Corp:22/",
            "git@git.corp:team/x.git"
        ));
    }
}
