//! What the DevOps agent knows: a repository's build systems ([`detect`]), the CI workflow
//! and Dockerfile they call for ([`ci`]), and the next release from conventional commits
//! ([`release`]). Everything here is rules over files and text; git and the model are the
//! agent's.

pub mod ci;
pub mod release;

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A build tool family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toolchain {
    Cargo,
    Npm,
    Pnpm,
    Yarn,
    Python,
    Go,
    Maven,
    Gradle,
}

/// A build system found at a repository's root, with the commands that build, lint and test
/// it (each an argv; `setup` installs dependencies first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildSystem {
    pub toolchain: Toolchain,
    /// The file that gave it away.
    pub manifest: String,
    pub setup: Vec<Vec<String>>,
    pub lint: Vec<Vec<String>>,
    pub build: Option<Vec<String>>,
    pub test: Vec<String>,
}

fn argv(words: &str) -> Vec<String> {
    words.split_whitespace().map(str::to_owned).collect()
}

impl BuildSystem {
    fn new(toolchain: Toolchain, manifest: &str, test: &str) -> Self {
        Self {
            toolchain,
            manifest: manifest.to_owned(),
            setup: Vec::new(),
            lint: Vec::new(),
            build: None,
            test: argv(test),
        }
    }

    fn setup(mut self, command: &str) -> Self {
        self.setup.push(argv(command));
        self
    }

    fn lint(mut self, command: &str) -> Self {
        self.lint.push(argv(command));
        self
    }

    fn build(mut self, command: &str) -> Self {
        self.build = Some(argv(command));
        self
    }

    /// Every command, in the order a CI job runs them.
    pub fn commands(&self) -> impl Iterator<Item = &Vec<String>> {
        self.setup
            .iter()
            .chain(&self.lint)
            .chain(&self.build)
            .chain(std::iter::once(&self.test))
    }
}

/// The build systems at `root`, in the order Cargo, Python, Node.js, Go, Maven, Gradle (a
/// Rust crate with a `package.json` for its docs is first a Cargo project). Only the root is looked at: a monorepo's members are
/// not discovered.
pub fn detect(root: &Path) -> Vec<BuildSystem> {
    let has = |f: &str| root.join(f).is_file();
    let mut found = Vec::new();
    if has("Cargo.toml") {
        found.push(
            BuildSystem::new(Toolchain::Cargo, "Cargo.toml", "cargo test --quiet")
                .lint("cargo fmt --all --check")
                .lint("cargo clippy --all-targets -- -D warnings")
                .build("cargo build --all-targets"),
        );
    }
    let python = [
        "pyproject.toml",
        "setup.py",
        "setup.cfg",
        "requirements.txt",
        "pytest.ini",
    ]
    .into_iter()
    .find(|f| has(f));
    if let Some(manifest) = python {
        let mut system = BuildSystem::new(Toolchain::Python, manifest, "python3 -m pytest -q")
            .setup("python3 -m pip install --upgrade pip pytest");
        if has("requirements.txt") {
            system = system.setup("python3 -m pip install -r requirements.txt");
        }
        if has("pyproject.toml") || has("setup.py") {
            system = system.setup("python3 -m pip install .");
        }
        found.push(system);
    }
    if has("package.json") {
        let (toolchain, install, run) = if has("pnpm-lock.yaml") {
            (Toolchain::Pnpm, "pnpm install --frozen-lockfile", "pnpm")
        } else if has("yarn.lock") {
            (Toolchain::Yarn, "yarn install --frozen-lockfile", "yarn")
        } else if has("package-lock.json") {
            (Toolchain::Npm, "npm ci", "npm")
        } else {
            (Toolchain::Npm, "npm install", "npm")
        };
        let test = if run == "npm" {
            "npm test --silent".to_owned()
        } else {
            format!("{run} test")
        };
        found.push(
            BuildSystem::new(toolchain, "package.json", &test)
                .setup(install)
                .build(&format!("{run} run build --if-present")),
        );
    }
    if has("go.mod") {
        found.push(
            BuildSystem::new(Toolchain::Go, "go.mod", "go test ./...")
                .lint("go vet ./...")
                .build("go build ./..."),
        );
    }
    if has("pom.xml") {
        found.push(
            BuildSystem::new(Toolchain::Maven, "pom.xml", "mvn -B test")
                .build("mvn -B -DskipTests package"),
        );
    }
    let gradle = ["build.gradle.kts", "build.gradle"]
        .into_iter()
        .find(|f| has(f));
    if let Some(manifest) = gradle {
        let tool = if has("gradlew") {
            "./gradlew"
        } else {
            "gradle"
        };
        found.push(
            BuildSystem::new(Toolchain::Gradle, manifest, &format!("{tool} test"))
                .build(&format!("{tool} assemble")),
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory that is removed when dropped.
    pub(crate) struct Scratch(std::path::PathBuf);

    impl Scratch {
        pub(crate) fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("orion-devops-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn repo(files: &[&str]) -> Scratch {
        let dir = Scratch::new();
        for f in files {
            std::fs::write(dir.path().join(f), "").unwrap();
        }
        dir
    }

    fn toolchains(files: &[&str]) -> Vec<Toolchain> {
        detect(repo(files).path())
            .into_iter()
            .map(|b| b.toolchain)
            .collect()
    }

    #[test]
    fn each_manifest_names_its_toolchain() {
        assert_eq!(toolchains(&["Cargo.toml"]), [Toolchain::Cargo]);
        assert_eq!(toolchains(&["go.mod"]), [Toolchain::Go]);
        assert_eq!(toolchains(&["requirements.txt"]), [Toolchain::Python]);
        assert_eq!(toolchains(&["package.json"]), [Toolchain::Npm]);
        assert_eq!(
            toolchains(&["package.json", "pnpm-lock.yaml"]),
            [Toolchain::Pnpm]
        );
        assert_eq!(
            toolchains(&["package.json", "yarn.lock"]),
            [Toolchain::Yarn]
        );
        assert_eq!(toolchains(&["pom.xml"]), [Toolchain::Maven]);
        assert_eq!(toolchains(&["build.gradle.kts"]), [Toolchain::Gradle]);
        assert_eq!(
            toolchains(&["Cargo.toml", "package.json"]),
            [Toolchain::Cargo, Toolchain::Npm]
        );
        assert!(toolchains(&["README.md"]).is_empty());
    }

    #[test]
    fn commands_follow_the_files_present() {
        let dir = repo(&["pyproject.toml", "requirements.txt"]);
        let python = &detect(dir.path())[0];
        let joined: Vec<String> = python.commands().map(|c| c.join(" ")).collect();
        assert_eq!(
            joined,
            [
                "python3 -m pip install --upgrade pip pytest",
                "python3 -m pip install -r requirements.txt",
                "python3 -m pip install .",
                "python3 -m pytest -q",
            ]
        );
        let dir = repo(&["build.gradle", "gradlew"]);
        assert_eq!(detect(dir.path())[0].test, ["./gradlew", "test"]);
        let dir = repo(&["package.json", "package-lock.json"]);
        assert_eq!(detect(dir.path())[0].setup, [["npm", "ci"]]);
    }
}
