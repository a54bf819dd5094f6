//! Layered configuration: `config/default.toml` compiled in, then an optional file, then
//! `ORION__SECTION__KEY` environment variables, into one typed [`Settings`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use orion_bus::{AgentKind, BusConfig};
use orion_services::secrets::{ExposeSecret, Sealer, SecretString};
use serde::Deserialize;

/// `ORION__LLM__API_KEY__FILE`: the value of `llm.api_key` is in that file.
const FILE_SUFFIX: &str = "__file";

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Clone, Debug, Deserialize)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub bus: BusSettings,
    pub node: NodeSettings,
    pub client: ClientSettings,
    pub llm: LlmSettings,
    pub redis: RedisSettings,
    pub developer: DeveloperSettings,
    /// The weights of context selection's signals.
    #[serde(default)]
    pub context: orion_services::code::select::SelectWeights,
    /// The forges (`[forges.<name>]`) that mirror the pull requests of their repositories
    /// and send webhooks; see `docs/forges.md`.
    #[serde(default)]
    pub forges: std::collections::BTreeMap<String, orion_services::forge::ForgeConfig>,
    /// Per agent kind (`[agents.developer]`): the model settings that differ from `[llm]`.
    #[serde(default)]
    pub agents: std::collections::HashMap<AgentKind, AgentModelSettings>,
    /// Who may call the gateway.
    #[serde(default)]
    pub auth: orion_gateway::auth::AuthSettings,
    #[serde(default)]
    pub secrets: SecretsSettings,
    /// Where tasks may point, and where credentials may go over plain HTTP.
    #[serde(default)]
    pub security: SecuritySettings,
    /// How repository code (tests, their setup) is confined.
    #[serde(default)]
    pub sandbox: orion_services::sandbox::SandboxConfig,
    /// What remotes over TLS and SSH are trusted (`[vcs]`: `ca_file`, `known_hosts`).
    #[serde(default)]
    pub vcs: orion_services::vcs::TransportConfig,
    /// Agent kinds served by external processes (`[plugins.<name>]`); see `docs/agents.md`.
    #[serde(default)]
    pub plugins: std::collections::BTreeMap<String, orion_bus::PluginKind>,
}

/// `[secrets]`: keys for secrets at rest.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecretsSettings {
    /// 32 bytes, base64: seals repository credentials in the store. Absent: Orion stores none.
    pub credentials_key: Option<SecretString>,
}

/// `[security]`: where a task's `repo` may point (see `orion_services::vcs::RepoPolicy`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SecuritySettings {
    /// Local directories tasks may name; absent: any in embedded mode, none in a cluster.
    pub repo_roots: Option<Vec<PathBuf>>,
    /// Remote hosts tasks may name (`host` or `host:port`); absent: in embedded mode any
    /// but loopback, link-local and metadata addresses, in a cluster none.
    pub repo_hosts: Option<Vec<String>>,
    /// Hosts a repository credential may be sent to over plain `http://`.
    #[serde(default)]
    pub insecure_hosts: Vec<String>,
}

/// What an agent kind changes of the `[llm]` settings.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AgentModelSettings {
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub model: Option<String>,
    pub fallback_model: Option<String>,
}

/// Which kind of model serves the agents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmProvider {
    /// Any OpenAI-compatible endpoint at `base_url`.
    #[default]
    Openai,
    /// A GGUF model run in-process on the CPU (`llm.model_path`; feature `local-model`).
    Local,
}

#[derive(Clone, Debug, Deserialize)]
pub struct LlmSettings {
    #[serde(default)]
    pub provider: LlmProvider,
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub model: String,
    pub fallback_model: Option<String>,
    pub timeout_secs: u64,
    pub max_attempts: u32,
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
    /// The longest a model call waits for its turn under those limits before its step fails
    /// with `rate_limited`.
    #[serde(default = "default_max_queue_wait_secs")]
    pub max_queue_wait_secs: u64,
    /// The budget of a task that sets none, in dollars; unlimited when absent.
    pub task_budget_usd: Option<f64>,
    /// Spending caps across tasks, per UTC day or month (`[[llm.budgets]]`).
    #[serde(default)]
    pub budgets: Vec<orion_services::budgets::SpendingCap>,
    #[serde(default)]
    pub prices: std::collections::HashMap<String, orion_services::llm::Price>,
    /// The GGUF file of `provider = "local"` (default `<data_dir>/models/` and the default
    /// model's name, where `orion model fetch` puts it).
    #[serde(default)]
    pub model_path: Option<std::path::PathBuf>,
    /// The local model's temperature, instead of what agents ask for (they ask for 0:
    /// greedy); above 0 it samples, seeded, so answers still repeat.
    #[serde(default)]
    pub local_temperature: Option<f32>,
    /// The most tokens a local model's answer may have (it never exceeds 1,024).
    #[serde(default)]
    pub local_max_tokens: Option<u32>,
    /// The local model's inference threads (default: one per core the process may use).
    #[serde(default)]
    pub local_threads: Option<usize>,
}

fn default_max_queue_wait_secs() -> u64 {
    120
}

#[derive(Clone, Debug, Deserialize)]
pub struct RedisSettings {
    pub url: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DeveloperSettings {
    pub author_name: String,
    pub author_email: String,
    pub test_command: Option<Vec<String>>,
    /// The suite's setup step (its dependencies), run in the sandbox before the tests.
    #[serde(default)]
    pub setup_command: Option<Vec<String>>,
    pub test_timeout_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub max_json_depth: usize,
    pub submissions_per_minute: u32,
    /// The event stream's limits (`ws_*` keys).
    #[serde(flatten)]
    pub streams: orion_gateway::StreamLimits,
    pub workers: usize,
    /// `/metrics` without credentials, for a scraper inside the cluster.
    #[serde(default)]
    pub public_metrics: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct DatabaseSettings {
    /// May hold a password, so it is a secret.
    pub url: Option<SecretString>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct BusSettings {
    /// One server (`nats://host:port`), or several separated by commas.
    pub url: Option<String>,
    /// More servers of the same cluster, to fail over between (with or instead of `url`).
    #[serde(default)]
    pub servers: Vec<String>,
    /// Copies of every stream the JetStream cluster keeps (3 to survive a server's loss).
    pub replicas: usize,
    pub prefix: String,
    pub ack_wait_ms: u64,
    pub max_deliver: u32,
    pub max_message_bytes: usize,
    /// Credentials: `user` with `password`, or `token`, or `creds_file` (JWT and nkey seed).
    pub user: Option<String>,
    pub password: Option<SecretString>,
    pub token: Option<SecretString>,
    pub creds_file: Option<PathBuf>,
    /// TLS: the CA that signed the server's certificate; a client certificate and key.
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub require_tls: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct NodeSettings {
    pub name: Option<String>,
    pub agents: Vec<AgentKind>,
    pub concurrency: usize,
    /// Per agent kind, deliveries handled at once where it differs (`[node.kind_concurrency]`);
    /// read through [`Settings::kind_concurrency`].
    #[serde(default)]
    pub kind_concurrency: std::collections::HashMap<AgentKind, usize>,
    /// Where a node serves `/healthz` and `/metrics`; absent: nowhere.
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, how long work in flight may take to finish before it is handed back.
    pub drain_timeout_secs: u64,
    /// How long a task may go unmoved before a coordinator looks for its messages on the bus
    /// and, finding none, queues it again.
    pub task_lease_secs: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ClientSettings {
    pub url: String,
    /// A JWT or API key sent as `Authorization: Bearer` (`ORION__CLIENT__TOKEN`).
    pub token: Option<SecretString>,
}

impl Settings {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            anyhow::ensure!(
                file.exists(),
                "config file {} does not exist",
                file.display()
            );
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(
            Env::prefixed("ORION__")
                .filter(|key| !key.as_str().to_ascii_lowercase().ends_with(FILE_SUFFIX))
                .split("__"),
        );
        // `ORION__SECTION__KEY__FILE=/path`: the key's value is the file's contents (how
        // Kubernetes and Docker hand secrets over), so secrets need not sit in the environment.
        for (name, path) in std::env::vars() {
            let Some(key) = name
                .strip_prefix("ORION__")
                .filter(|k| k.to_ascii_lowercase().ends_with(FILE_SUFFIX))
                .map(|k| &k[..k.len() - FILE_SUFFIX.len()])
            else {
                continue;
            };
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("while reading {name} ({path})"))?;
            let key = key.to_lowercase().replace("__", ".");
            figment = figment.merge((key, value.trim_end_matches(['\r', '\n']).to_owned()));
        }
        let settings: Self = figment
            .extract()
            .context("while reading the configuration")?;
        // The declared kinds are known to this process before any message is decoded.
        settings.plugins()?;
        orion_services::budgets::check_caps(&settings.llm.budgets).map_err(anyhow::Error::msg)?;
        Ok(settings)
    }

    /// Where `orion model fetch` puts models: `<data_dir>/models`.
    pub fn models_dir(&self) -> std::path::PathBuf {
        self.data_dir.join("models")
    }

    /// The data directory as an absolute path (what the sandbox and the repository policy
    /// keep out of reach).
    pub fn data_dir_absolute(&self) -> PathBuf {
        std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone())
    }

    /// Where a task's `repo` may point: the configured roots and hosts (in a cluster, none
    /// until configured; embedded, any), never inside this process's data directory.
    pub fn repo_policy(&self) -> orion_services::vcs::RepoPolicy {
        let cluster = self.bus_servers().is_some();
        let security = &self.security;
        let data_dir = self.data_dir_absolute();
        orion_services::vcs::RepoPolicy {
            roots: security
                .repo_roots
                .clone()
                .or_else(|| cluster.then(Vec::new)),
            hosts: security
                .repo_hosts
                .clone()
                .or_else(|| cluster.then(Vec::new)),
            denied: vec![data_dir],
        }
    }

    pub fn local_model_path(&self) -> std::path::PathBuf {
        self.llm.model_path.clone().unwrap_or_else(|| {
            self.models_dir()
                .join(orion_services::llm::LOCAL_MODEL_FILE)
        })
    }

    /// The kinds of `[plugins]`, declared in this process (a repeat is harmless).
    pub fn plugins(&self) -> anyhow::Result<orion_bus::Plugins> {
        orion_bus::Plugins::declare(&self.plugins).context("while declaring `[plugins]`")
    }

    /// `[node.kind_concurrency]`, where on Postgres a coordinator not named there handles at
    /// least [`orion_actors::COORDINATOR_CONCURRENCY`] deliveries at once per queue (its
    /// handlings mostly wait on group commits and acknowledgements). On SQLite, one
    /// connection, it takes `node.concurrency` like any agent.
    pub fn kind_concurrency(&self) -> std::collections::HashMap<AgentKind, usize> {
        let mut kinds = self.node.kind_concurrency.clone();
        let postgres = self
            .database
            .url
            .as_ref()
            .is_some_and(|url| url.expose_secret().starts_with("postgres"));
        if postgres {
            kinds
                .entry(AgentKind::Coordinator)
                .or_insert(orion_actors::coordinator_concurrency(self.node.concurrency));
        }
        kinds
    }

    /// The database URL: the configured one, or SQLite in the data directory.
    pub fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.database.url {
            return Ok(url.expose_secret().to_owned());
        }
        std::fs::create_dir_all(&self.data_dir).with_context(|| {
            format!(
                "while creating the data directory {}",
                self.data_dir.display()
            )
        })?;
        let dir = self
            .data_dir
            .canonicalize()
            .context("while resolving the data directory")?;
        Ok(format!(
            "sqlite://{}?mode=rwc",
            dir.join("orion.db").display()
        ))
    }

    /// The sealer of repository credentials, where a key is configured.
    pub fn sealer(&self) -> anyhow::Result<Option<Sealer>> {
        self.secrets
            .credentials_key
            .as_ref()
            .map(|key| Sealer::from_base64(key).context("while reading secrets.credentials_key"))
            .transpose()
    }

    /// Every secret this configuration holds (model and forge keys, webhook, JWT and
    /// credential keys, NATS and client tokens, the database URL): what an export of data
    /// must never carry, whatever its shape.
    pub fn configured_secrets(&self) -> Vec<String> {
        let mut secrets: Vec<&SecretString> = Vec::new();
        secrets.extend(&self.llm.api_key);
        secrets.extend(self.agents.values().filter_map(|a| a.api_key.as_ref()));
        for forge in self.forges.values() {
            secrets.push(&forge.token);
            secrets.extend(&forge.webhook_secret);
        }
        secrets.extend(&self.auth.jwt.secret);
        secrets.extend(&self.secrets.credentials_key);
        secrets.extend(&self.bus.password);
        secrets.extend(&self.bus.token);
        secrets.extend(&self.client.token);
        secrets.extend(&self.database.url);
        // Redis's address is plain text; where it carries a password, that and the address
        // are secrets too.
        let redis = self.redis.url.as_deref().and_then(|url| {
            let (credentials, _) = url.split_once("://")?.1.split_once('@')?;
            let password = credentials.rsplit(':').next()?;
            Some([url.to_owned(), password.to_owned()])
        });
        secrets
            .into_iter()
            .map(|s| s.expose_secret().to_owned())
            .chain(redis.into_iter().flatten())
            // Too short to be told from ordinary words.
            .filter(|s| s.len() >= 6)
            .collect()
    }

    /// How to authenticate to NATS and check its server.
    pub fn nats_security(&self) -> orion_bus::NatsSecurity {
        let b = &self.bus;
        let expose = |s: &Option<SecretString>| s.as_ref().map(|s| s.expose_secret().to_owned());
        orion_bus::NatsSecurity {
            user: b.user.clone(),
            password: expose(&b.password),
            token: expose(&b.token),
            creds_file: b.creds_file.clone(),
            tls_ca_file: b.tls_ca_file.clone(),
            tls_cert_file: b.tls_cert_file.clone(),
            tls_key_file: b.tls_key_file.clone(),
            require_tls: b.require_tls,
        }
    }

    /// The NATS servers to connect to, comma-separated (`bus.url`, then `bus.servers`);
    /// `None`: the in-process bus.
    pub fn bus_servers(&self) -> Option<String> {
        let servers: Vec<&str> = self
            .bus
            .url
            .iter()
            .chain(&self.bus.servers)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        (!servers.is_empty()).then(|| servers.join(","))
    }

    pub fn bus_config(&self) -> BusConfig {
        BusConfig {
            ack_wait: Duration::from_millis(self.bus.ack_wait_ms),
            max_deliver: self.bus.max_deliver,
            max_message_bytes: self.bus.max_message_bytes,
            prefetch: self.node.concurrency,
            replicas: self.bus.replicas,
            ..BusConfig::default()
        }
    }

    /// The model client settings of an agent kind: `[llm]` with `[agents.<kind>]` over it;
    /// `None` where no endpoint is configured for it.
    pub fn llm_config(&self, agent: AgentKind) -> Option<orion_services::llm::OpenAiConfig> {
        let llm = &self.llm;
        let own = self.agents.get(&agent).cloned().unwrap_or_default();
        let base_url = own.base_url.or_else(|| llm.base_url.clone())?;
        let mut config = orion_services::llm::OpenAiConfig::new(
            base_url,
            own.model.unwrap_or_else(|| llm.model.clone()),
        );
        config.api_key = own.api_key.or_else(|| llm.api_key.clone());
        config.fallback_model = own.fallback_model.or_else(|| llm.fallback_model.clone());
        config.timeout = Duration::from_secs(llm.timeout_secs);
        config.max_attempts = llm.max_attempts;
        config.requests_per_minute = llm.requests_per_minute;
        config.tokens_per_minute = llm.tokens_per_minute;
        config.max_queue_wait = std::time::Duration::from_secs(llm.max_queue_wait_secs);
        config.prices = llm.prices.clone();
        Some(config)
    }

    /// This process's node name: configured, or host name and process id.
    pub fn node_name(&self) -> String {
        self.node.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_password_is_a_configured_secret_and_a_bare_address_is_not() {
        let mut settings = Settings::load(Some(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/test.toml"),
        ))
        .unwrap();
        settings.redis.url = Some("redis://:cachepass1@cache.internal:6379/0".into());
        let known = settings.configured_secrets();
        assert!(known.contains(&"cachepass1".to_owned()), "{known:?}");
        let text = "REDIS_URL=redis://:cachepass1@cache.internal:6379/0 and cachepass1 alone";
        let redacted = orion_services::secrets::redact_known(text, &known);
        assert!(!redacted.contains("cachepass1"), "{redacted}");
        settings.redis.url = Some("redis://127.0.0.1:6379".into());
        assert!(
            !settings
                .configured_secrets()
                .iter()
                .any(|s| s.contains("127.0.0.1"))
        );
    }

    #[test]
    fn a_coordinator_on_postgres_takes_at_least_its_floor_unless_named_and_on_sqlite_the_node_bound()
     {
        let mut settings = Settings::load(Some(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/test.toml"),
        ))
        .unwrap();
        let floor = orion_actors::COORDINATOR_CONCURRENCY;
        settings.node.concurrency = 4;
        settings.node.kind_concurrency = [(AgentKind::Developer, 1)].into();
        settings.database.url = None;
        let sqlite = settings.kind_concurrency();
        assert_eq!(sqlite.get(&AgentKind::Coordinator), None);
        settings.database.url = Some("sqlite:///tmp/orion.db".into());
        assert_eq!(
            settings.kind_concurrency().get(&AgentKind::Coordinator),
            None
        );
        settings.database.url = Some("postgres://postgres@127.0.0.1:5432/orion".into());
        let postgres = settings.kind_concurrency();
        assert_eq!(postgres.get(&AgentKind::Coordinator), Some(&floor));
        assert_eq!(postgres.get(&AgentKind::Developer), Some(&1));
        settings.node.concurrency = floor + 10;
        assert_eq!(
            settings.kind_concurrency().get(&AgentKind::Coordinator),
            Some(&(floor + 10))
        );
        settings
            .node
            .kind_concurrency
            .insert(AgentKind::Coordinator, 8);
        assert_eq!(
            settings.kind_concurrency().get(&AgentKind::Coordinator),
            Some(&8)
        );
    }

    #[test]
    fn every_shipped_config_file_loads() {
        for file in [
            "config/default.toml",
            "config/cluster.toml",
            "config/test.toml",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
            let settings = Settings::load(Some(&path)).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            assert!(!settings.node.agents.is_empty(), "{file}");
        }
        let with_override =
            std::env::temp_dir().join(format!("orion-settings-{}.toml", std::process::id()));
        std::fs::write(
            &with_override,
            "[llm]\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"general\"\n[agents.developer]\nmodel = \"coder\"\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&with_override)).unwrap();
        std::fs::remove_file(&with_override).unwrap();
        assert_eq!(
            settings.llm_config(AgentKind::Developer).unwrap().model,
            "coder"
        );
        assert_eq!(
            settings.llm_config(AgentKind::Architect).unwrap().model,
            "general"
        );
        assert!(
            Settings::load(None)
                .unwrap()
                .llm_config(AgentKind::Developer)
                .is_none(),
            "no endpoint, no model"
        );
        let cluster = Settings::load(Some(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("config/cluster.toml"),
        ))
        .unwrap();
        assert_eq!(cluster.bus.url.as_deref(), Some("nats://127.0.0.1:4222"));
    }
}
