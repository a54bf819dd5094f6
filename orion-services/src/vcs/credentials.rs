//! Credentials for private remotes: given to libgit2 when a remote asks (HTTP basic or
//! user-and-password over SSH), from the store's sealed records, opened only here.
//!
//! The node keeps the sealed records in a [`CredentialCache`], refreshed in the background
//! and at once when a remote asks for a credential the cache lacks, and registers it with
//! [`set_credential_source`]. Git operations answer a remote's challenge from it on their
//! blocking threads; a remote that refuses the credential is asked once, not in a loop.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use git2::{Cred, CredentialType, RemoteCallbacks};

use crate::secrets::{ExposeSecret, Sealer};
use crate::store::Store;

struct Entry {
    prefix: String,
    username: String,
    sealed: String,
}

/// The sealed credentials of the store, in memory; opened one at a time when a remote asks.
pub struct CredentialCache {
    entries: RwLock<Vec<Entry>>,
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
    /// A cache of `store`'s credentials; call it on the runtime that is to read the store.
    pub fn new(sealer: Sealer, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            entries: RwLock::new(Vec::new()),
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

    /// Refreshes every `every` on the current runtime, for as long as the process runs.
    pub fn keep_fresh(self: &Arc<Self>, every: Duration) {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = cache.refresh().await {
                    tracing::warn!(error = %e, "could not refresh repository credentials");
                }
            }
        });
    }

    /// [`Self::lookup`], re-reading the store first on a miss (a credential stored since the
    /// last refresh; only remotes that ask for one get here). Blocks: for git's threads,
    /// never the runtime's.
    fn lookup_or_read(&self, url: &str) -> Option<(String, String)> {
        if let Some(found) = self.lookup(url) {
            return Some(found);
        }
        if let Err(e) = self.runtime.block_on(self.refresh()) {
            tracing::warn!(error = %e, "could not read repository credentials");
        }
        self.lookup(url)
    }

    /// The username and secret for `url`: the record with the longest matching prefix.
    pub fn lookup(&self, url: &str) -> Option<(String, String)> {
        let entries = self.entries.read().expect("not poisoned");
        let entry = entries
            .iter()
            .filter(|e| url.starts_with(&e.prefix))
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

/// Callbacks for a fetch, clone or push of `url`: they answer a credential challenge once,
/// reading the credential only when the remote asks (public remotes never do).
pub(crate) fn callbacks(url: &str) -> RemoteCallbacks<'static> {
    let mut callbacks = RemoteCallbacks::new();
    let source = SOURCE.read().expect("not poisoned").clone();
    let url = url.to_owned();
    let mut asked = false;
    callbacks.credentials(move |_, _, allowed| {
        let found = if asked {
            None
        } else {
            source.as_ref().and_then(|cache| cache.lookup_or_read(&url))
        };
        let Some((user, secret)) = found else {
            return Err(git2::Error::from_str(
                "the remote wants credentials, and none (or none it accepts) are stored for it \
                 (POST /v1/credentials)",
            ));
        };
        asked = true;
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            Cred::userpass_plaintext(&user, &secret)
        } else {
            Err(git2::Error::from_str(
                "the remote asks for a kind of credential Orion does not hold",
            ))
        }
    });
    callbacks
}
