//! A CI workflow (GitHub Actions syntax) and a Dockerfile for the build systems found, and the
//! checks that a workflow or Dockerfile, written by these rules or by a model, is usable.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use yaml_rust2::{Yaml, YamlLoader};

use super::{BuildSystem, Toolchain};

/// Where the workflow goes, unless the repository already has a file there.
pub const WORKFLOW_PATH: &str = ".github/workflows/ci.yml";
/// The name used when [`WORKFLOW_PATH`] is taken.
pub const FALLBACK_WORKFLOW_PATH: &str = ".github/workflows/orion-ci.yml";

/// A YAML scalar: plain where that is safe, single-quoted where it is not.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && !s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`".contains(c) || c.is_whitespace())
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.ends_with(':')
        && !s.ends_with(' ');
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The job id and the steps that install a toolchain on a GitHub-hosted runner.
fn toolchain_steps(root: &Path, system: &BuildSystem) -> (&'static str, &'static str, String) {
    let has = |f: &str| root.join(f).is_file();
    match system.toolchain {
        Toolchain::Cargo => (
            "rust",
            "Rust",
            "      - uses: dtolnay/rust-toolchain@stable\n        with:\n          components: clippy, rustfmt\n      - uses: Swatinem/rust-cache@v2\n".to_owned(),
        ),
        Toolchain::Python => {
            let cache = if has("requirements.txt") || has("pyproject.toml") {
                "\n          cache: pip"
            } else {
                ""
            };
            (
                "python",
                "Python",
                format!("      - uses: actions/setup-python@v5\n        with:\n          python-version: '3.12'{cache}\n"),
            )
        }
        Toolchain::Npm | Toolchain::Yarn | Toolchain::Pnpm => {
            let (id, cache) = match system.toolchain {
                Toolchain::Pnpm => ("pnpm", "\n          cache: pnpm"),
                Toolchain::Yarn => ("yarn", "\n          cache: yarn"),
                _ if has("package-lock.json") => ("npm", "\n          cache: npm"),
                _ => ("npm", ""),
            };
            let pnpm = if id == "pnpm" {
                "      - uses: pnpm/action-setup@v4\n        with:\n          version: 9\n"
            } else {
                ""
            };
            (
                "node",
                "Node.js",
                format!("{pnpm}      - uses: actions/setup-node@v4\n        with:\n          node-version: 20{cache}\n"),
            )
        }
        Toolchain::Go => (
            "go",
            "Go",
            "      - uses: actions/setup-go@v5\n        with:\n          go-version-file: go.mod\n".to_owned(),
        ),
        Toolchain::Maven | Toolchain::Gradle => {
            let (id, cache, gradle) = if system.toolchain == Toolchain::Maven {
                ("maven", "maven", "")
            } else {
                ("gradle", "gradle", "      - uses: gradle/actions/setup-gradle@v4\n")
            };
            (
                id,
                "Java",
                format!("      - uses: actions/setup-java@v4\n        with:\n          distribution: temurin\n          java-version: '21'\n          cache: {cache}\n{gradle}"),
            )
        }
    }
}

/// The workflow: one job per build system, on pushes to `base` and on pull requests.
pub fn workflow(root: &Path, systems: &[BuildSystem], base: &str) -> String {
    let mut text = format!(
        "# Written by Orion's DevOps agent from the repository's build files.\nname: CI\n\non:\n  push:\n    branches: [{}]\n  pull_request:\n\npermissions:\n  contents: read\n\njobs:\n",
        scalar(base)
    );
    for system in systems {
        let (id, name, setup) = toolchain_steps(root, system);
        let _ = write!(
            text,
            "  {id}:\n    name: {name} ({})\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n{setup}",
            system.manifest
        );
        let labelled = system
            .setup
            .iter()
            .map(|c| ("Install dependencies", c))
            .chain(system.lint.iter().map(|c| ("Lint", c)))
            .chain(system.build.iter().map(|c| ("Build", c)))
            .chain(std::iter::once(("Test", &system.test)));
        for (label, command) in labelled {
            let _ = write!(
                text,
                "      - name: {label}\n        run: {}\n",
                scalar(&command.join(" "))
            );
        }
    }
    text
}

fn manifest_toml(root: &Path, file: &str) -> Option<toml::Table> {
    std::fs::read_to_string(root.join(file)).ok()?.parse().ok()
}

/// The Dockerfile for the first build system: a build stage and a slim runtime stage for a
/// program; for a library (nothing to run), one stage whose default command runs the tests.
pub fn dockerfile(root: &Path, system: &BuildSystem) -> String {
    let has = |f: &str| root.join(f).is_file();
    let mut text = String::from(
        "# syntax=docker/dockerfile:1\n# Written by Orion's DevOps agent from the repository's build files.\n",
    );
    let test = serde_json::to_string(&system.test).unwrap_or_default();
    match system.toolchain {
        Toolchain::Cargo => {
            let cargo = manifest_toml(root, "Cargo.toml");
            let name = cargo
                .as_ref()
                .and_then(|t| t.get("package")?.get("name")?.as_str().map(str::to_owned));
            let locked = if has("Cargo.lock") { " --locked" } else { "" };
            text.push_str("FROM rust:1-slim AS build\nWORKDIR /src\nCOPY . .\n");
            match name.filter(|_| has("src/main.rs")) {
                Some(name) => {
                    let _ = write!(
                        text,
                        "RUN cargo build --release{locked}\n\nFROM debian:bookworm-slim\nCOPY --from=build /src/target/release/{name} /usr/local/bin/{name}\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n"
                    );
                }
                None => {
                    let _ = write!(text, "RUN cargo build --all-targets{locked}\nCMD {test}\n");
                }
            }
        }
        Toolchain::Python => {
            text.push_str("FROM python:3.12-slim\nENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1\nWORKDIR /app\n");
            if has("requirements.txt") {
                text.push_str("COPY requirements.txt .\nRUN python3 -m pip install --no-cache-dir -r requirements.txt\n");
            }
            text.push_str("COPY . .\n");
            if has("pyproject.toml") || has("setup.py") {
                text.push_str("RUN python3 -m pip install --no-cache-dir .\n");
            }
            let script = manifest_toml(root, "pyproject.toml").and_then(|t| {
                let scripts = t.get("project")?.get("scripts")?.as_table()?;
                scripts.keys().next().cloned()
            });
            let entry = ["main.py", "app.py"].into_iter().find(|f| has(f));
            match (script, entry) {
                (Some(script), _) => {
                    let _ = writeln!(text, "USER 65532:65532\nCMD [\"{script}\"]");
                }
                (None, Some(entry)) => {
                    let _ = writeln!(text, "USER 65532:65532\nCMD [\"python3\", \"{entry}\"]");
                }
                (None, None) => {
                    text.push_str("RUN python3 -m pip install --no-cache-dir pytest\n");
                    let _ = writeln!(text, "CMD {test}");
                }
            }
        }
        Toolchain::Npm | Toolchain::Yarn | Toolchain::Pnpm => {
            let install = system
                .setup
                .first()
                .map(|c| c.join(" "))
                .unwrap_or_else(|| "npm install".into());
            let corepack = if system.toolchain == Toolchain::Npm {
                ""
            } else {
                "RUN corepack enable\n"
            };
            let start = std::fs::read_to_string(root.join("package.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|p| p["scripts"]["start"].is_string());
            let _ = write!(
                text,
                "FROM node:20-slim\nWORKDIR /app\n{corepack}COPY package*.json *.lock pnpm-lock.yaml* ./\nRUN {install}\nCOPY . .\n"
            );
            if let Some(build) = &system.build {
                let _ = writeln!(text, "RUN {}", build.join(" "));
            }
            if start {
                text.push_str("USER node\nCMD [\"npm\", \"start\"]\n");
            } else {
                let _ = writeln!(text, "CMD {test}");
            }
        }
        Toolchain::Go => {
            let module = std::fs::read_to_string(root.join("go.mod"))
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find_map(|l| l.strip_prefix("module "))
                        .map(|m| m.trim().rsplit('/').next().unwrap_or("app").to_owned())
                });
            text.push_str("FROM golang:1.22 AS build\nWORKDIR /src\nCOPY go.* ./\nRUN go mod download\nCOPY . .\n");
            match module.filter(|_| has("main.go")) {
                Some(name) => {
                    let _ = write!(
                        text,
                        "RUN CGO_ENABLED=0 go build -o /out/{name} .\n\nFROM gcr.io/distroless/static-debian12\nCOPY --from=build /out/{name} /usr/local/bin/{name}\nUSER 65532:65532\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n"
                    );
                }
                None => {
                    let _ = writeln!(text, "RUN go build ./...\nCMD {test}");
                }
            }
        }
        Toolchain::Maven | Toolchain::Gradle => {
            let (image, build, libs) = if system.toolchain == Toolchain::Maven {
                (
                    "maven:3-eclipse-temurin-21",
                    "mvn -B -DskipTests package",
                    "target",
                )
            } else {
                ("gradle:8-jdk21", "gradle assemble", "build/libs")
            };
            let _ = write!(
                text,
                "FROM {image} AS build\nWORKDIR /src\nCOPY . .\nRUN {build}\n\nFROM eclipse-temurin:21-jre\nWORKDIR /app\nCOPY --from=build /src/{libs}/*.jar /app/\nUSER 65532:65532\nENTRYPOINT [\"sh\", \"-c\", \"exec java -jar /app/*.jar\"]\n"
            );
        }
    }
    text
}

/// What the build context leaves out.
pub const DOCKERIGNORE: &str =
    ".git\ntarget/\nnode_modules/\n__pycache__/\n.venv/\nbuild/\ndist/\n";

/// What the checks of a workflow found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkflowCheck {
    pub jobs: Vec<String>,
    /// The `run` commands of every step, in order.
    pub commands: Vec<String>,
}

fn key<'a>(map: &'a Yaml, name: &str) -> Option<&'a Yaml> {
    map.as_hash()?.get(&Yaml::String(name.to_owned()))
}

/// Checks a workflow: it parses as YAML, has triggers and jobs, every job runs on a runner
/// and has steps that use an action or run a command, every command starts with a program
/// of the project's toolchains, and every build system's tests are run.
pub fn validate_workflow(
    root: &Path,
    text: &str,
    systems: &[BuildSystem],
) -> Result<WorkflowCheck, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let [doc] = docs.as_slice() else {
        return Err(format!("{} YAML documents; a workflow is one", docs.len()));
    };
    if key(doc, "on").is_none() {
        return Err("no `on:` triggers".into());
    }
    let jobs = key(doc, "jobs")
        .and_then(Yaml::as_hash)
        .filter(|j| !j.is_empty())
        .ok_or("no `jobs:`")?;
    let mut check = WorkflowCheck {
        jobs: Vec::new(),
        commands: Vec::new(),
    };
    for (id, job) in jobs {
        let id = id.as_str().ok_or("a job id is not a string")?.to_owned();
        if key(job, "runs-on").is_none() {
            return Err(format!("job `{id}` has no `runs-on`"));
        }
        let steps = key(job, "steps")
            .and_then(Yaml::as_vec)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("job `{id}` has no steps"))?;
        for step in steps {
            match (key(step, "uses"), key(step, "run").and_then(Yaml::as_str)) {
                (Some(_), None) => {}
                (None, Some(run)) => check.commands.push(run.trim().to_owned()),
                _ => {
                    return Err(format!(
                        "a step of job `{id}` neither uses an action nor runs a command"
                    ));
                }
            }
        }
        check.jobs.push(id);
    }
    let programs: Vec<&str> = systems
        .iter()
        .flat_map(|s| s.commands().map(|c| c[0].as_str()))
        .collect();
    for command in &check.commands {
        for line in command.lines().filter(|l| !l.trim().is_empty()) {
            let program = line.split_whitespace().next().unwrap_or_default();
            if !programs.contains(&program) {
                return Err(format!(
                    "`{line}` runs `{program}`, which is not a tool of this project"
                ));
            }
            if program.starts_with("./") && !root.join(program).is_file() {
                return Err(format!(
                    "`{line}` runs `{program}`, which the repository does not have"
                ));
            }
        }
    }
    for system in systems {
        let test = system.test.join(" ");
        if !check
            .commands
            .iter()
            .any(|c| c.lines().any(|l| l.trim() == test))
        {
            return Err(format!(
                "the workflow never runs the {} tests (`{test}`)",
                system.manifest
            ));
        }
    }
    Ok(check)
}

/// Instructions a Dockerfile may hold.
const INSTRUCTIONS: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Checks a Dockerfile: known instructions only, `FROM` first (after `ARG`s), and a command
/// or entry point to run.
pub fn validate_dockerfile(text: &str) -> Result<(), String> {
    let mut seen_from = false;
    let mut runs_something = false;
    let mut continued = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let was_continued = std::mem::replace(&mut continued, trimmed.ends_with('\\'));
        if was_continued || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let word = trimmed
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !INSTRUCTIONS.contains(&word.as_str()) {
            return Err(format!(
                "line {}: `{word}` is not a Dockerfile instruction",
                n + 1
            ));
        }
        match word.as_str() {
            "FROM" => seen_from = true,
            "ARG" => {}
            _ if !seen_from => return Err(format!("line {}: `{word}` before `FROM`", n + 1)),
            "CMD" | "ENTRYPOINT" => runs_something = true,
            _ => {}
        }
    }
    if !seen_from {
        return Err("no `FROM`".into());
    }
    if !runs_something {
        return Err("no `CMD` or `ENTRYPOINT`".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::detect;
    use super::super::tests::{Scratch, repo};
    use super::*;

    fn write(dir: &Scratch, file: &str, text: &str) {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_workflow_of_every_toolchain_passes_its_own_checks() {
        let layouts: &[&[&str]] = &[
            &["Cargo.toml"],
            &["requirements.txt"],
            &["pyproject.toml"],
            &["package.json", "package-lock.json"],
            &["package.json", "pnpm-lock.yaml"],
            &["package.json", "yarn.lock"],
            &["go.mod"],
            &["pom.xml"],
            &["build.gradle", "gradlew"],
            &["Cargo.toml", "package.json"],
        ];
        for files in layouts {
            let dir = repo(files);
            let systems = detect(dir.path());
            let text = workflow(dir.path(), &systems, "main");
            let check = validate_workflow(dir.path(), &text, &systems)
                .unwrap_or_else(|e| panic!("{files:?}: {e}\n{text}"));
            assert_eq!(check.jobs.len(), systems.len(), "{files:?}");
            let docker = dockerfile(dir.path(), &systems[0]);
            validate_dockerfile(&docker).unwrap_or_else(|e| panic!("{files:?}: {e}\n{docker}"));
        }
    }

    #[test]
    fn a_rust_binary_gets_a_two_stage_image_and_a_library_a_test_image() {
        let dir = Scratch::new();
        write(
            &dir,
            "Cargo.toml",
            "[package]\nname = \"hello\"\nversion = \"0.1.0\"\n",
        );
        write(&dir, "src/main.rs", "fn main() {}\n");
        let systems = detect(dir.path());
        let docker = dockerfile(dir.path(), &systems[0]);
        assert!(
            docker.contains("COPY --from=build /src/target/release/hello /usr/local/bin/hello"),
            "{docker}"
        );
        std::fs::remove_file(dir.path().join("src/main.rs")).unwrap();
        let docker = dockerfile(dir.path(), &systems[0]);
        assert!(
            docker.contains("CMD [\"cargo\",\"test\",\"--quiet\"]"),
            "{docker}"
        );
    }

    #[test]
    fn broken_workflows_are_refused_with_the_reason() {
        let dir = repo(&["Cargo.toml"]);
        let systems = detect(dir.path());
        let good = workflow(dir.path(), &systems, "main");
        let cases = [
            ("jobs: [", "not YAML"),
            ("on: push\n", "no `jobs:`"),
            (
                "jobs:\n  a:\n    runs-on: x\n    steps: [{run: cargo test}]\n",
                "no `on:`",
            ),
            (
                "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: make all\n",
                "`make all` runs `make`",
            ),
            (
                "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: cargo build\n",
                "never runs the Cargo.toml tests",
            ),
            (
                &good.replace("runs-on: ubuntu-latest", "container: x"),
                "has no `runs-on`",
            ),
        ];
        for (text, why) in cases {
            let error = validate_workflow(dir.path(), text, &systems).unwrap_err();
            assert!(error.contains(why), "{text}: {error}");
        }
        assert!(validate_workflow(dir.path(), &good, &systems).is_ok());
        assert!(
            validate_dockerfile("RUN x\nFROM y\nCMD z\n")
                .unwrap_err()
                .contains("before `FROM`")
        );
        assert!(
            validate_dockerfile("FROM y\nRUNN x\nCMD z\n")
                .unwrap_err()
                .contains("RUNN")
        );
        assert!(
            validate_dockerfile("FROM y\nRUN a \\\n  b\n")
                .unwrap_err()
                .contains("no `CMD`")
        );
    }

    #[test]
    fn scalars_that_yaml_would_misread_are_quoted() {
        assert_eq!(scalar("cargo test"), "cargo test");
        assert_eq!(scalar("echo a: b"), "'echo a: b'");
        assert_eq!(scalar("it's #1"), "'it''s #1'");
        assert_eq!(scalar("*star"), "'*star'");
    }
}
