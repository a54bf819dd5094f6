//! The next release from conventional commits: which version, and its changelog section.
//!
//! The bump follows [Conventional Commits](https://www.conventionalcommits.org): a breaking
//! change (`type!:` or a `BREAKING CHANGE:` footer) bumps the major version, a `feat` the
//! minor, a `fix` or `perf` the patch. Before 1.0.0 a breaking change bumps the minor
//! version instead, as is usual for initial development. Other types (`docs`, `chore`, …)
//! release nothing on their own.

use std::fmt::Write as _;

use semver::Version;
use serde::{Deserialize, Serialize};

/// How much a release moves the version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bump {
    Patch,
    Minor,
    Major,
}

/// One commit read as a conventional commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: String,
    pub scope: Option<String>,
    pub breaking: bool,
    pub description: String,
    /// The commit's short id.
    pub commit: String,
}

impl Change {
    /// What the change asks of the version, if anything.
    pub fn bump(&self) -> Option<Bump> {
        if self.breaking {
            return Some(Bump::Major);
        }
        match self.kind.as_str() {
            "feat" => Some(Bump::Minor),
            "fix" | "perf" => Some(Bump::Patch),
            _ => None,
        }
    }
}

/// Reads a commit message as a conventional commit; `None` when its subject is not one.
pub fn parse_commit(id: &str, message: &str) -> Option<Change> {
    let subject = message.lines().next()?.trim();
    let (head, description) = subject.split_once(": ")?;
    let (head, bang) = match head.strip_suffix('!') {
        Some(h) => (h, true),
        None => (head, false),
    };
    let (kind, scope) = match head.split_once('(') {
        Some((kind, rest)) => (kind, Some(rest.strip_suffix(')')?.to_owned())),
        None => (head, None),
    };
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if !valid(kind) || scope.as_deref().is_some_and(|s| !valid(s)) || description.trim().is_empty()
    {
        return None;
    }
    let footer = message
        .lines()
        .skip(1)
        .any(|l| l.starts_with("BREAKING CHANGE:") || l.starts_with("BREAKING-CHANGE:"));
    Some(Change {
        kind: kind.to_ascii_lowercase(),
        scope,
        breaking: bang || footer,
        description: description.trim().to_owned(),
        commit: id.chars().take(7).collect(),
    })
}

/// A version tag: `v1.2.3` or `1.2.3` (pre-releases are not releases to build on).
pub fn tag_version(tag: &str) -> Option<Version> {
    let version = Version::parse(tag.strip_prefix('v').unwrap_or(tag)).ok()?;
    version.pre.is_empty().then_some(version)
}

/// The release to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The tag the release builds on; `None` for a first release.
    pub previous: Option<String>,
    pub version: String,
    pub tag: String,
    pub bump: Bump,
    pub changes: Vec<Change>,
    /// The changelog section, Markdown.
    pub section: String,
}

const GROUPS: &[(&str, &str)] = &[
    ("feat", "Features"),
    ("fix", "Bug fixes"),
    ("perf", "Performance"),
];

/// The newest version tag among `tags` (pre-releases aside).
pub fn latest(tags: &[String]) -> Option<&String> {
    tags.iter()
        .filter_map(|t| Some((tag_version(t)?, t)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, t)| t)
}

/// The release after tag `previous` (see [`latest`]) for `commits` made since it (id and
/// message, newest first) on `date`; `None` when no commit is releasable.
pub fn plan(previous: Option<&str>, commits: &[(String, String)], date: &str) -> Option<Plan> {
    let previous = previous.and_then(|t| Some((tag_version(t)?, t)));
    let changes: Vec<Change> = commits
        .iter()
        .filter_map(|(id, m)| parse_commit(id, m))
        .collect();
    let bump = changes.iter().filter_map(Change::bump).max()?;
    let base = previous
        .as_ref()
        .map(|(v, _)| v.clone())
        .unwrap_or(Version::new(0, 0, 0));
    let mut version = base.clone();
    match (bump, base.major) {
        (Bump::Major, 0) | (Bump::Minor, _) => {
            version.minor += 1;
            version.patch = 0;
        }
        (Bump::Major, _) => {
            version = Version::new(base.major + 1, 0, 0);
        }
        (Bump::Patch, _) => version.patch += 1,
    }
    let prefix = match &previous {
        Some((_, tag)) if !tag.starts_with('v') => "",
        _ => "v",
    };
    let mut section = format!("## [{version}] - {date}\n");
    let line = |c: &Change| match &c.scope {
        Some(scope) => format!("- **{scope}:** {} ({})\n", c.description, c.commit),
        None => format!("- {} ({})\n", c.description, c.commit),
    };
    let breaking: Vec<&Change> = changes.iter().filter(|c| c.breaking).collect();
    if !breaking.is_empty() {
        section.push_str("\n### Breaking changes\n\n");
        breaking.iter().for_each(|c| section.push_str(&line(c)));
    }
    for (kind, title) in GROUPS {
        let group: Vec<&Change> = changes
            .iter()
            .filter(|c| c.kind == *kind && !c.breaking)
            .collect();
        if !group.is_empty() {
            let _ = write!(section, "\n### {title}\n\n");
            group.iter().for_each(|c| section.push_str(&line(c)));
        }
    }
    Some(Plan {
        previous: previous.map(|(_, t)| t.to_owned()),
        tag: format!("{prefix}{version}"),
        version: version.to_string(),
        bump,
        changes,
        section,
    })
}

/// The changelog with `section` as its newest entry: after the title and introduction of an
/// existing one (before its first `## ` entry), or a new file.
pub fn with_section(existing: Option<&str>, section: &str) -> String {
    let Some(text) = existing.filter(|t| !t.trim().is_empty()) else {
        return format!("# Changelog\n\n{section}");
    };
    let at = text
        .match_indices("\n## ")
        .next()
        .map(|(i, _)| i + 1)
        .or_else(|| text.starts_with("## ").then_some(0));
    match at {
        Some(i) => format!("{}{section}\n{}", &text[..i], &text[i..]),
        None => format!("{}\n\n{section}", text.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commits(messages: &[&str]) -> Vec<(String, String)> {
        messages
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("{i:07}abcdef"), (*m).to_owned()))
            .collect()
    }

    #[test]
    fn subjects_are_read_as_conventional_commits() {
        let c = parse_commit("abcdef123", "feat(api)!: drop v1\n\nbody").unwrap();
        assert_eq!(
            (
                c.kind.as_str(),
                c.scope.as_deref(),
                c.breaking,
                c.description.as_str(),
                c.commit.as_str()
            ),
            ("feat", Some("api"), true, "drop v1", "abcdef1")
        );
        let footer = parse_commit("1", "fix: x\n\nBREAKING CHANGE: the config moved").unwrap();
        assert!(footer.breaking);
        assert_eq!(parse_commit("1", "Merge branch 'x'"), None);
        assert_eq!(parse_commit("1", "feat(: x"), None);
        assert_eq!(parse_commit("1", "feat: "), None);
        assert_eq!(parse_commit("1", "fe at: x"), None);
    }

    #[test]
    fn the_largest_change_sets_the_bump() {
        let tags = vec![
            "v1.2.3".to_owned(),
            "v1.10.0-rc.1".to_owned(),
            "v0.9.0".to_owned(),
            "nightly".to_owned(),
        ];
        assert_eq!(latest(&tags).map(String::as_str), Some("v1.2.3"));
        let next = |m: &[&str]| plan(Some("v1.2.3"), &commits(m), "2026-11-26").map(|p| p.tag);
        assert_eq!(next(&["fix: a", "docs: b"]).as_deref(), Some("v1.2.4"));
        assert_eq!(next(&["fix: a", "feat: b"]).as_deref(), Some("v1.3.0"));
        assert_eq!(next(&["feat!: b", "fix: a"]).as_deref(), Some("v2.0.0"));
        assert_eq!(
            next(&["docs: only", "chore: tidy", "not conventional"]),
            None
        );
        let early = |m: &[&str]| plan(Some("0.3.1"), &commits(m), "d").map(|p| p.tag);
        assert_eq!(
            early(&["feat!: b"]).as_deref(),
            Some("0.4.0"),
            "before 1.0 and without a `v`"
        );
        assert_eq!(
            plan(None, &commits(&["feat: first"]), "d").unwrap().tag,
            "v0.1.0"
        );
    }

    #[test]
    fn the_section_groups_changes_and_lands_above_the_last_release() {
        let p = plan(
            Some("v1.0.0"),
            &commits(&[
                "feat(cli): add --json",
                "fix: crash on empty input",
                "refactor!: rename the crate",
                "docs: typo",
            ]),
            "2026-11-26",
        )
        .unwrap();
        assert_eq!(
            p.section,
            "## [2.0.0] - 2026-11-26\n\n### Breaking changes\n\n- rename the crate (0000002)\n\n### Features\n\n- **cli:** add --json (0000000)\n\n### Bug fixes\n\n- crash on empty input (0000001)\n"
        );
        let old = "# Changelog\n\nAll notable changes.\n\n## [1.0.0] - 2026-01-01\n\n- first\n";
        let new = with_section(Some(old), &p.section);
        assert!(
            new.starts_with("# Changelog\n\nAll notable changes.\n\n## [2.0.0]"),
            "{new}"
        );
        assert!(
            new.ends_with("(0000001)\n\n## [1.0.0] - 2026-01-01\n\n- first\n"),
            "{new}"
        );
        assert_eq!(
            with_section(None, "## [0.1.0]\n"),
            "# Changelog\n\n## [0.1.0]\n"
        );
        assert_eq!(
            with_section(Some("# Log\n"), "## [0.1.0]\n"),
            "# Log\n\n## [0.1.0]\n"
        );
    }
}
