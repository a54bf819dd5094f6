//! Routing policy: which kind an `auto` task becomes, chosen by the capabilities the
//! built-in and declared kinds name (the declarations themselves, and their input schemas,
//! are the wire's: `orion_bus::Plugins`).

use std::collections::BTreeMap;

use orion_bus::{Plugins, TaskKind};
use serde::Serialize;

/// What each built-in kind does, in words a prompt uses (for `"kind": "auto"`).
const BUILTIN_CAPABILITIES: &[(TaskKind, &[&str])] = &[
    (
        TaskKind::Develop,
        &[
            "change",
            "fix",
            "implement",
            "add",
            "refactor",
            "feature",
            "bug",
            "rename",
            "modify",
            "update",
            "remove",
            "code",
        ],
    ),
    (
        TaskKind::Review,
        &["review", "comment", "feedback", "critique", "inspect"],
    ),
    (
        TaskKind::Analyze,
        &[
            "analyze",
            "analyse",
            "analysis",
            "metrics",
            "complexity",
            "hotspot",
            "debt",
            "quality",
            "measure",
        ],
    ),
    (
        TaskKind::Test,
        &["test", "pytest", "failing", "verify", "suite"],
    ),
    (
        TaskKind::Design,
        &[
            "design",
            "architecture",
            "dependency",
            "dependencies",
            "graph",
            "module",
            "layer",
            "cycle",
            "adr",
        ],
    ),
    (
        TaskKind::Ci,
        &[
            "ci",
            "pipeline",
            "workflow",
            "actions",
            "dockerfile",
            "docker",
            "container",
        ],
    ),
    (
        TaskKind::Release,
        &["release", "version", "changelog", "tag", "semver", "bump"],
    ),
];

/// A word's stem, so that `releases`, `released` and `release` meet.
fn stem(word: &str) -> String {
    let word = word.to_lowercase();
    for suffix in ["ing", "ed", "es", "e", "s"] {
        if word.len() > suffix.len() + 3
            && let Some(stem) = word.strip_suffix(suffix)
        {
            return stem.to_owned();
        }
    }
    word
}

/// The kind chosen for an `auto` task, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Choice {
    pub kind: TaskKind,
    /// The prompt's words that matched the kind's capabilities.
    pub matched: Vec<String>,
    /// Every kind with at least one match, and how many.
    pub scores: BTreeMap<String, usize>,
    pub why: String,
}

/// Picks the kind for an `auto` task: the built-in or declared kind whose capabilities
/// (and, for a declared kind, its name) share the most words with the prompt; the first in
/// declaration order on a tie. `Err` says why none could be chosen.
pub fn choose(plugins: &Plugins, prompt: &str) -> Result<Choice, String> {
    {
        let words: std::collections::BTreeSet<String> = prompt
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(stem)
            .collect();
        let declared = plugins.kinds().map(|(kind, plugin)| {
            let mut capabilities: Vec<&str> =
                plugin.capabilities.iter().map(String::as_str).collect();
            capabilities.push(kind.as_str());
            (TaskKind::Custom(kind), capabilities)
        });
        let candidates = BUILTIN_CAPABILITIES
            .iter()
            .map(|(kind, words)| (*kind, words.to_vec()))
            .chain(declared);
        let mut best: Option<(TaskKind, Vec<String>)> = None;
        let mut scores = BTreeMap::new();
        for (kind, capabilities) in candidates {
            let mut matched: Vec<String> = capabilities
                .iter()
                .filter(|c| words.contains(&stem(c)))
                .map(|c| (*c).to_owned())
                .collect();
            matched.dedup();
            if matched.is_empty() {
                continue;
            }
            scores.insert(kind.to_string(), matched.len());
            if best.as_ref().is_none_or(|(_, b)| matched.len() > b.len()) {
                best = Some((kind, matched));
            }
        }
        let (kind, matched) = best.ok_or_else(|| {
            "no kind's capabilities match the prompt; name the kind instead of `auto`".to_owned()
        })?;
        let others: Vec<String> = scores
            .iter()
            .filter(|(k, _)| **k != kind.as_str())
            .map(|(k, n)| format!("{k} ({n})"))
            .collect();
        let why = format!(
            "chose `{kind}`: the prompt names {} of its capabilities ({}){}",
            matched.len(),
            matched.join(", "),
            if others.is_empty() {
                String::new()
            } else {
                format!("; the others matched less: {}", others.join(", "))
            }
        );
        Ok(Choice {
            kind,
            matched,
            scores,
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orion_bus::PluginKind;

    #[test]
    fn auto_picks_the_kind_whose_capabilities_the_prompt_names() {
        let mut config = BTreeMap::new();
        config.insert(
            "translate-docs".to_owned(),
            PluginKind {
                description: "Translates documentation".into(),
                capabilities: vec!["translate".into(), "translation".into(), "language".into()],
                input_schema: None,
            },
        );
        let plugins = Plugins::declare(&config).unwrap();
        let kind = |prompt: &str| choose(&plugins, prompt).map(|c| c.kind.to_string());
        assert_eq!(
            kind("Cut a release: bump the version and write the changelog").as_deref(),
            Ok("release")
        );
        assert_eq!(
            kind("Set up a CI pipeline with a Dockerfile").as_deref(),
            Ok("ci")
        );
        assert_eq!(
            kind("Where are the complexity hotspots?").as_deref(),
            Ok("analyze")
        );
        assert_eq!(
            kind("Translate the README into another language").as_deref(),
            Ok("translate-docs")
        );
        assert_eq!(kind("Fix the bug in the parser").as_deref(), Ok("develop"));
        let choice = choose(&plugins, "release notes and a released version tag").unwrap();
        assert_eq!(choice.matched, ["release", "version", "tag"]);
        assert!(
            choice
                .why
                .starts_with("chose `release`: the prompt names 3 of its capabilities"),
            "{}",
            choice.why
        );
        assert!(
            choose(&plugins, "hello there")
                .unwrap_err()
                .contains("name the kind")
        );
    }
}
