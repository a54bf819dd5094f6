//! The Helm chart as Kubernetes would get it: rendered by the real `helm` (installed by
//! scripts/tools.sh, which scripts/test.sh runs), with the default values and with `--set`
//! overrides; and the configuration it renders is one the `orion` binary accepts.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::support::TempDir;

fn tools() -> PathBuf {
    tool("bin/helm")
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

/// A tool `scripts/tools.sh` installs (`ORION_TOOLS`, by default `/var/tmp/orion-tools`), by
/// its path there.
pub(crate) fn tool(path: &str) -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("ORION_TOOLS").unwrap_or_else(|_| "/var/tmp/orion-tools".into()),
    );
    let tool = dir.join(path);
    assert!(
        tool.exists(),
        "{path} is missing from {}: run scripts/tools.sh (scripts/test.sh does)",
        dir.display()
    );
    tool
}

/// `helm template` of the chart with `args`: the manifests as JSON, or helm's error.
fn render(args: &[&str]) -> Result<Vec<Value>, String> {
    let tools = tools();
    let out = Command::new(tools.join("bin/helm"))
        .args(["template", "orion", "helm/orion"])
        .args(args)
        .output()
        .expect("run helm");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let mut python = Command::new(tools.join("venv/bin/python"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the YAML reader");
    use std::io::Write;
    python.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let json = python.wait_with_output().unwrap();
    assert!(json.status.success(), "the rendered YAML parses");
    Ok(serde_json::from_slice(&json.stdout).unwrap())
}

fn find<'a>(manifests: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    manifests
        .iter()
        .find(|m| m["kind"] == kind && m["metadata"]["name"] == name)
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The secret key an environment variable of a container is wired to.
fn secret_ref(container: &Value, var: &str) -> Option<(String, String)> {
    let env = container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?;
    let r = &env["valueFrom"]["secretKeyRef"];
    Some((
        r["name"].as_str()?.to_owned(),
        r["key"].as_str()?.to_owned(),
    ))
}

#[test]
fn the_default_values_render_the_gateway_node_pools_migration_hook_and_secret_wiring() {
    let manifests = render(&[]).expect("the defaults render");
    let gateway = find(&manifests, "Deployment", "orion-gateway").expect("a gateway");
    assert_eq!(container(gateway)["args"], serde_json::json!(["gateway"]));
    assert_eq!(
        container(gateway)["readinessProbe"]["httpGet"]["path"],
        "/readyz"
    );
    assert_eq!(
        container(gateway)["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    for (pool, agents) in [
        ("coordinators", "coordinator"),
        ("workers", "developer,analyzer,architect,devops"),
    ] {
        let node = find(&manifests, "Deployment", &format!("orion-node-{pool}"))
            .unwrap_or_else(|| panic!("node pool {pool}"));
        assert_eq!(
            container(node)["args"],
            serde_json::json!(["node", "--agents", agents])
        );
        assert_eq!(
            node["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
            60
        );
        assert_eq!(
            secret_ref(container(node), "ORION__DATABASE__URL"),
            Some(("orion-secrets".into(), "database-url".into()))
        );
        assert_eq!(
            secret_ref(container(node), "ORION__AUTH__JWT__SECRET"),
            None,
            "only the gateway verifies tokens"
        );
    }
    // The pool that runs tests holds no secret: no database, model, credentials or JWT key.
    let testers = find(&manifests, "Deployment", "orion-node-testers").expect("the test pool");
    assert_eq!(
        container(testers)["args"],
        serde_json::json!(["node", "--agents", "testing"])
    );
    for var in [
        "ORION__DATABASE__URL",
        "ORION__LLM__API_KEY",
        "ORION__SECRETS__CREDENTIALS_KEY",
        "ORION__AUTH__JWT__SECRET",
        "ORION__REDIS__URL",
    ] {
        assert_eq!(secret_ref(container(testers), var), None, "{var}");
    }
    assert_eq!(
        secret_ref(container(testers), "ORION__BUS__URL"),
        Some(("orion-secrets".into(), "nats-url".into()))
    );
    let coordinators = find(&manifests, "Deployment", "orion-node-coordinators").unwrap();
    assert_eq!(
        secret_ref(container(coordinators), "ORION__LLM__API_KEY"),
        None
    );
    assert_eq!(
        secret_ref(container(coordinators), "ORION__SECRETS__CREDENTIALS_KEY"),
        None
    );
    let job = find(&manifests, "Job", "orion-migrate").expect("the migration job");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    assert_eq!(
        container_of_job(job)["args"],
        serde_json::json!(["migrate"])
    );
    let secret = find(&manifests, "Secret", "orion-secrets").expect("the secret");
    assert_eq!(
        secret["stringData"]["database-url"],
        "postgres://orion@postgres:5432/orion"
    );
    assert_eq!(secret["stringData"]["nats-url"], "nats://nats:4222");
    // The gateway refuses to start without auth: the chart always wires a JWT secret,
    // generated when none is given.
    assert_eq!(
        secret_ref(container(gateway), "ORION__AUTH__JWT__SECRET"),
        Some(("orion-secrets".into(), "jwt-secret".into()))
    );
    assert!(
        secret["stringData"]["jwt-secret"]
            .as_str()
            .is_some_and(|s| s.len() >= 32),
        "a generated JWT secret of 48 characters"
    );

    // The configuration file the chart mounts is one Orion reads, with the environment the
    // pods set on top of it.
    let config = find(&manifests, "ConfigMap", "orion-config").expect("the config map");
    let dir = TempDir::new();
    let file = dir.path().join("orion.toml");
    std::fs::write(&file, config["data"]["orion.toml"].as_str().unwrap()).unwrap();
    let settings =
        orion::settings::Settings::load(Some(&file)).expect("Orion reads the chart's config");
    assert_eq!(settings.llm.model, "gpt-4o-mini");
    assert_eq!(settings.developer.test_timeout_secs, 600);
}

fn container_of_job(job: &Value) -> &Value {
    &job["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn set_overrides_change_pools_secrets_and_ingress_and_bad_values_are_refused() {
    let manifests = render(&[
        "--set",
        "existingSecret=team-credentials",
        "--set",
        "gateway.ingress.enabled=true,gateway.ingress.host=agents.example.org",
        "--set",
        "nodePools[0].name=builders,nodePools[0].agents={developer,testing},nodePools[0].replicas=5",
        "--set",
        "nodePools[0].autoscaling.enabled=false",
    ])
    .expect("the overrides render");
    assert!(
        manifests.iter().all(|m| m["kind"] != "Secret"),
        "an existing secret is used, none is made"
    );
    let builders = find(&manifests, "Deployment", "orion-node-builders").expect("the new pool");
    assert_eq!(builders["spec"]["replicas"], 5);
    assert_eq!(
        container(builders)["args"],
        serde_json::json!(["node", "--agents", "developer,testing"])
    );
    assert_eq!(
        secret_ref(container(builders), "ORION__BUS__URL"),
        Some(("team-credentials".into(), "nats-url".into()))
    );
    let ingress = find(&manifests, "Ingress", "orion").expect("the ingress");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "agents.example.org");

    // A forge's token and webhook secret: in the chart's secret, and given to the gateway (which
    // checks webhooks) and to the nodes (which call the forge).
    let forges = render(&[
        "--set",
        "secrets.forges.github.token=ghp-test,secrets.forges.github.webhookSecret=0123456789abcdef",
    ])
    .expect("a forge's secrets render");
    let secret = find(&forges, "Secret", "orion-secrets").expect("the secret");
    assert_eq!(secret["stringData"]["forge-github-token"], "ghp-test");
    assert_eq!(
        secret["stringData"]["forge-github-webhook-secret"],
        "0123456789abcdef"
    );
    for deployment in ["orion-gateway", "orion-node-workers"] {
        let container = container(find(&forges, "Deployment", deployment).expect(deployment));
        for (var, key) in [
            ("ORION__FORGES__GITHUB__TOKEN", "forge-github-token"),
            (
                "ORION__FORGES__GITHUB__WEBHOOK_SECRET",
                "forge-github-webhook-secret",
            ),
        ] {
            assert_eq!(
                secret_ref(container, var),
                Some(("orion-secrets".into(), key.into())),
                "{deployment} {var}"
            );
        }
    }
    let refused = render(&["--set", "secrets.forges.github.webhookSecret=short"]).unwrap_err();
    assert!(
        refused.contains("values don't meet the specifications of the schema"),
        "{refused}"
    );

    let refused = render(&["--set", "nodePools[0].agents={wizard}"]).unwrap_err();
    assert!(
        refused.contains("values don't meet the specifications of the schema"),
        "{refused}"
    );
    let refused = render(&["--set", "existingSecret=,secrets.databaseUrl="]).unwrap_err();
    assert!(
        refused.contains("secrets.databaseUrl (or existingSecret) is required"),
        "{refused}"
    );
    let refused = render(&["--set", "nats.replicas=0"]).unwrap_err();
    assert!(
        refused.contains("values don't meet the specifications of the schema"),
        "{refused}"
    );

    // Streams on one server by default; on three in the production values.
    for (args, replicas) in [
        (&[][..], "1"),
        (
            &["--values", "helm/orion/ci/production-values.yaml"][..],
            "3",
        ),
    ] {
        let manifests = render(args).expect("the values render");
        let deployments: Vec<&Value> = manifests
            .iter()
            .filter(|m| m["kind"] == "Deployment")
            .collect();
        assert!(deployments.len() >= 3);
        for deployment in deployments {
            assert_eq!(
                env_value(container(deployment), "ORION__BUS__REPLICAS"),
                Some(replicas),
                "{}",
                deployment["metadata"]["name"]
            );
        }
    }
}

/// The literal value of an environment variable of a container.
fn env_value<'a>(container: &'a Value, var: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == var)?["value"]
        .as_str()
}

/// A pool's `kindConcurrency` reaches its node: the chart renders it as the environment
/// `orion node` reads, and a node started with the rendered environment handles that many of
/// the kind at once (and the pool's `concurrency` of the others); without it, a coordinator on
/// Postgres takes its floor. Kinds the node does not know, and fewer than one, are refused.
#[actix_rt::test]
async fn a_pools_concurrency_per_kind_reaches_its_node() {
    use crate::cluster::orion;
    use crate::support::{Process, first_line};

    let (db, prefix, env) = crate::cluster::migrated_cluster("kc").await;
    let floor = orion_actors::COORDINATOR_CONCURRENCY;
    // `--set` on a list's element replaces the element: the pool is given whole.
    let pool = |kinds: &str| {
        format!(
            "nodePools[0].name=coordinators,nodePools[0].agents={{coordinator}},\
             nodePools[0].replicas=1,nodePools[0].concurrency=4{kinds}"
        )
    };
    for (kinds, coordinator) in [
        (",nodePools[0].kindConcurrency.coordinator=16", 16),
        ("", floor),
    ] {
        let manifests = render(&["--set", &pool(kinds)]).expect("the values render");
        let pool = container(find(&manifests, "Deployment", "orion-node-coordinators").unwrap());
        // The node's settings as the chart gives them.
        let mut node_env = env.clone();
        for var in [
            "ORION__NODE__CONCURRENCY",
            "ORION__NODE__KIND_CONCURRENCY__COORDINATOR",
        ] {
            if let Some(value) = env_value(pool, var) {
                node_env.push((var, value.to_owned()));
            }
        }
        assert_eq!(
            env_value(pool, "ORION__NODE__KIND_CONCURRENCY__COORDINATOR").is_some(),
            !kinds.is_empty(),
            "{kinds}"
        );
        let mut node = Process(
            orion(
                &node_env,
                &[
                    "node",
                    "--name",
                    "kc-node",
                    "--agents",
                    "coordinator,analyzer",
                ],
            )
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
        );
        let line = first_line(&mut node.0, "the node").await;
        assert_eq!(
            line,
            format!(
                "node kc-node running coordinator ({coordinator} at once), analyzer (4 at once)"
            ),
            "{kinds}"
        );
    }
    for bad in [
        ",nodePools[0].kindConcurrency.wizard=2",
        ",nodePools[0].kindConcurrency.developer=0",
    ] {
        let refused = render(&["--set", &pool(bad)]).unwrap_err();
        assert!(
            refused.contains("values don't meet the specifications of the schema")
                && refused.contains("kindConcurrency"),
            "{bad}: {refused}"
        );
    }
    crate::cluster::tear_down(prefix, db).await;
}
