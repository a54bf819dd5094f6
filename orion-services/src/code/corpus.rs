//! Context selection measured on a corpus of repositories it was not tuned on.
//!
//! A corpus file lists repositories (each a public one, fetched by the user, pinned to a
//! commit). A fixed rule splits them into a tuning set and a held-out set before anything is
//! measured: within each language, the repositories ordered by a hash of their names go to
//! tuning and held-out in turn. The weights are chosen on the tuning set alone (the current
//! weights and a seeded random search, by the mean file recall@5), then every repository is
//! evaluated ([`super::eval`]) with the chosen weights; the held-out figures are the claim, the
//! tuning figures are printed beside them for comparison.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::eval::{EvalOptions, EvalReport, MethodScore, evaluate};
use super::select::SelectWeights;
use crate::jitter::SplitMix64;

/// The recall cut-off the search maximises and the summary reports.
pub const OBJECTIVE_K: usize = 5;
/// The values a searched weight takes (`bm25` stays 1: scaling every weight alike changes no
/// ranking, so one of them is fixed).
const GRID_STEPS: u64 = 16; // 0.0, 0.1, …, 1.5

/// One repository of a corpus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusRepo {
    /// `owner/name` on GitHub; the clone is looked for at `<repos>/<owner>/<name>`.
    pub name: String,
    pub language: String,
    /// The commit measured, its whole id (history is read from it, not from the clone's
    /// HEAD).
    pub commit: String,
}

/// A corpus file: `[[repo]]` tables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corpus {
    #[serde(rename = "repo")]
    pub repos: Vec<CorpusRepo>,
}

/// What is wrong with a corpus or its repositories.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("the corpus file is not valid: {0}")]
    Invalid(String),
    #[error(
        "{name}: no clone at {path} ({why}); fetch it with `git clone --bare https://github.com/{name} {path}`"
    )]
    Missing {
        name: String,
        path: PathBuf,
        why: String,
    },
    #[error("{name}: the clone at {path} does not have commit {commit}; fetch it again")]
    NoCommit {
        name: String,
        path: PathBuf,
        commit: String,
    },
    #[error(
        "{name}: the clone at {path} is shallow (its oldest commits look parentless); clone it whole"
    )]
    Shallow { name: String, path: PathBuf },
    #[error("{name}: {why}")]
    Eval { name: String, why: String },
}

impl Corpus {
    /// Reads a corpus file's text, refusing anything that could point outside the repositories'
    /// folder or be measured twice.
    pub fn parse(text: &str) -> Result<Self, CorpusError> {
        let mut corpus: Self =
            toml::from_str(text).map_err(|e| CorpusError::Invalid(e.to_string()))?;
        for repo in &mut corpus.repos {
            repo.language = repo.language.trim().to_owned();
        }
        if corpus.repos.is_empty() {
            return Err(CorpusError::Invalid("it lists no `[[repo]]`".into()));
        }
        let mut seen = HashSet::new();
        for repo in &corpus.repos {
            let part_ok = |p: &str| {
                !p.is_empty()
                    && p != "."
                    && p != ".."
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            };
            let parts: Vec<&str> = repo.name.split('/').collect();
            if parts.len() != 2 || !parts.iter().all(|p| part_ok(p)) {
                return Err(CorpusError::Invalid(format!(
                    "`{}` is not an `owner/name` of letters, digits, `-`, `_` and `.`",
                    repo.name
                )));
            }
            if !seen.insert(repo.name.to_ascii_lowercase()) {
                return Err(CorpusError::Invalid(format!(
                    "`{}` is listed twice",
                    repo.name
                )));
            }
            if repo.language.trim().is_empty() {
                return Err(CorpusError::Invalid(format!(
                    "`{}` has no language",
                    repo.name
                )));
            }
            // A whole id: a shorter one could be taken for a branch or tag of that name.
            if repo.commit.len() != 40 || !repo.commit.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(CorpusError::Invalid(format!(
                    "`{}`: `{}` is not a whole commit id (40 hex digits)",
                    repo.name, repo.commit
                )));
            }
        }
        Ok(corpus)
    }
}

/// Which set a repository is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Tuning,
    HeldOut,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tuning => "tuning",
            Self::HeldOut => "held_out",
        }
    }
}

/// How languages meet: `Go`, `go` and ` Go ` are one.
fn language_key(language: &str) -> String {
    language.trim().to_lowercase()
}

/// FNV-1a of a name: a fixed order no one chose.
fn name_hash(name: &str) -> u64 {
    name.to_ascii_lowercase()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

/// The fixed rule: within each language, the repositories ordered by the hash of their names
/// alternate tuning, held-out, tuning, … (a language with one repository only tunes).
pub fn split(repos: &[CorpusRepo]) -> Vec<Split> {
    let mut by_language: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, repo) in repos.iter().enumerate() {
        by_language
            .entry(language_key(&repo.language))
            .or_default()
            .push(i);
    }
    let mut splits = vec![Split::Tuning; repos.len()];
    for members in by_language.values_mut() {
        members.sort_by_key(|&i| (name_hash(&repos[i].name), repos[i].name.clone()));
        for (n, &i) in members.iter().enumerate() {
            if n % 2 == 1 {
                splits[i] = Split::HeldOut;
            }
        }
    }
    splits
}

/// The weights tried: the given ones first, then `trials` drawn from the grid by `seed`.
pub fn candidates(current: &SelectWeights, trials: usize, seed: u64) -> Vec<SelectWeights> {
    let mut random = SplitMix64::new(seed);
    let mut draw = || (random.next_u64() % GRID_STEPS) as f64 / 10.0;
    let mut all = vec![current.clone()];
    for _ in 0..trials {
        all.push(SelectWeights {
            bm25: 1.0,
            path: draw(),
            symbols: draw(),
            mentions: draw(),
            graph: draw(),
            cochange: draw(),
        });
    }
    all
}

/// How the corpus is measured.
#[derive(Clone, Debug)]
pub struct CorpusOptions {
    /// Where the clones are: `<repos>/<owner>/<name>`.
    pub repos: PathBuf,
    /// Qualifying commits per repository, newest first from its pinned commit.
    pub commits: usize,
    /// Random weight settings tried beside the current ones.
    pub trials: usize,
    pub seed: u64,
    /// The weights the search starts from (the configured ones).
    pub weights: SelectWeights,
    pub threads: usize,
}

/// One repository's figures with the chosen weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoResult {
    pub name: String,
    pub language: String,
    pub split: Split,
    pub commit: String,
    pub commits_evaluated: usize,
    pub files: usize,
    pub function_commits: usize,
    /// File level: orion, bm25, repo_map.
    pub methods: Vec<MethodScore>,
    /// Function level, on the commits that changed a function of the parent.
    pub function_methods: Vec<MethodScore>,
    pub seconds: f64,
}

impl RepoResult {
    fn recall(methods: &[MethodScore], method: &str) -> f64 {
        methods
            .iter()
            .find(|m| m.method == method)
            .and_then(|m| m.recall.get(&OBJECTIVE_K).copied())
            .unwrap_or(0.0)
    }

    /// File recall@5 of a method.
    pub fn file_recall(&self, method: &str) -> f64 {
        Self::recall(&self.methods, method)
    }

    /// Function recall@5 of a method.
    pub fn function_recall(&self, method: &str) -> f64 {
        Self::recall(&self.function_methods, method)
    }

    fn mrr(methods: &[MethodScore], method: &str) -> f64 {
        methods
            .iter()
            .find(|m| m.method == method)
            .map_or(0.0, |m| m.mrr)
    }

    /// File MRR of a method.
    pub fn file_mrr(&self, method: &str) -> f64 {
        Self::mrr(&self.methods, method)
    }

    /// Function MRR of a method.
    pub fn function_mrr(&self, method: &str) -> f64 {
        Self::mrr(&self.function_methods, method)
    }
}

/// Means over a group of repositories (a set, or one language of a set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub split: Split,
    /// A language, or `all`.
    pub group: String,
    pub repos: usize,
    /// Mean file recall@5 by method.
    pub file_recall: BTreeMap<String, f64>,
    /// Orion's lead over BM25 at file recall@5 (points): mean, standard deviation, least.
    pub lead_mean: f64,
    pub lead_sd: f64,
    pub lead_min: f64,
    /// Mean function recall@5 by method, over the repositories with a commit that changed a
    /// function.
    pub function_recall: BTreeMap<String, f64>,
}

/// The whole measurement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CorpusReport {
    pub seed: u64,
    pub trials: usize,
    /// The weights the search started from, and their mean file recall@5 on the tuning set.
    pub start_weights: SelectWeights,
    pub start_objective: f64,
    /// The weights chosen on the tuning set, and their mean file recall@5 there.
    pub weights: SelectWeights,
    pub objective: f64,
    /// Every setting tried, in order (the starting weights first), with its mean file
    /// recall@5 on the tuning set.
    pub search: Vec<(SelectWeights, f64)>,
    pub repos: Vec<RepoResult>,
    pub summary: Vec<GroupSummary>,
    pub seconds: f64,
}

/// Where a corpus repository's clone is.
pub fn clone_path(repos: &Path, repo: &CorpusRepo) -> PathBuf {
    repos.join(&repo.name)
}

/// Checks every clone is a whole git repository of its own (not one found around its folder)
/// holding its commit, before anything is measured.
fn check_clones(corpus: &Corpus, repos: &Path) -> Result<(), CorpusError> {
    for repo in &corpus.repos {
        let path = clone_path(repos, repo);
        let missing = |why: String| CorpusError::Missing {
            name: repo.name.clone(),
            path: path.clone(),
            why,
        };
        if !path.is_dir() {
            return Err(missing("no such folder".into()));
        }
        let git = git2::Repository::open_ext(
            &path,
            git2::RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .map_err(|e| missing(format!("not a git repository: {}", e.message())))?;
        if git.is_shallow() {
            return Err(CorpusError::Shallow {
                name: repo.name.clone(),
                path,
            });
        }
        let found = git2::Oid::from_str(&repo.commit)
            .ok()
            .and_then(|id| git.find_commit(id).ok());
        if found.is_none() {
            return Err(CorpusError::NoCommit {
                name: repo.name.clone(),
                path,
                commit: repo.commit.clone(),
            });
        }
    }
    Ok(())
}

/// Measures the corpus: the search on the tuning set, then every repository with the chosen
/// weights. `progress` hears a line per step.
pub fn run(
    corpus: &Corpus,
    options: &CorpusOptions,
    mut progress: impl FnMut(&str),
) -> Result<CorpusReport, CorpusError> {
    let started = std::time::Instant::now();
    check_clones(corpus, &options.repos)?;
    let splits = split(&corpus.repos);
    if !splits.contains(&Split::HeldOut) {
        progress(
            "no repository is held out (each language has one): the figures are all in-sample",
        );
    }
    let tried = candidates(&options.weights, options.trials, options.seed);
    let eval = |repo: &CorpusRepo, weights: &SelectWeights, candidates: Vec<SelectWeights>| {
        let eval_options = EvalOptions {
            commits: options.commits,
            ks: vec![1, OBJECTIVE_K, 10],
            weights: weights.clone(),
            candidates,
            rev: Some(repo.commit.clone()),
            threads: options.threads,
            ..EvalOptions::default()
        };
        let report = evaluate(&clone_path(&options.repos, repo), &eval_options).map_err(|e| {
            CorpusError::Eval {
                name: repo.name.clone(),
                why: e.to_string(),
            }
        })?;
        // A repository with nothing to measure would count as a recall of 0.
        if report.commits_evaluated == 0 {
            return Err(CorpusError::Eval {
                name: repo.name.clone(),
                why: format!(
                    "no commit qualifies (non-merge, changing 1 to 5 source files that existed in its parent) in the history of {}",
                    repo.commit
                ),
            });
        }
        Ok(report)
    };

    // The search: every candidate on every tuning repository, in one pass over each, summed
    // in the order of their names (so that listing them otherwise changes no sum).
    let mut sums = vec![0.0; tried.len()];
    let mut tuning = 0;
    let mut tuning_repos: Vec<&CorpusRepo> = corpus
        .repos
        .iter()
        .zip(&splits)
        .filter(|(_, s)| **s == Split::Tuning)
        .map(|(r, _)| r)
        .collect();
    tuning_repos.sort_by(|a, b| a.name.cmp(&b.name));
    for repo in tuning_repos {
        progress(&format!(
            "tuning: {} ({} weight settings)",
            repo.name,
            tried.len()
        ));
        let report = eval(repo, &options.weights, tried.clone())?;
        for (sum, score) in sums.iter_mut().zip(&report.candidates) {
            *sum += score.recall.get(&OBJECTIVE_K).copied().unwrap_or(0.0);
        }
        tuning += 1;
    }
    let objective: Vec<f64> = sums.iter().map(|s| s / f64::from(tuning.max(1))).collect();
    // The best mean; a tie keeps the earlier candidate (the current weights first).
    let best = (0..tried.len()).fold(0, |best, i| {
        if objective[i] > objective[best] {
            i
        } else {
            best
        }
    });
    let weights = tried[best].clone();
    progress(&format!(
        "chosen on the tuning set: {weights:?} (recall@{OBJECTIVE_K} {:.3}; the starting weights {:.3})",
        objective[best], objective[0]
    ));

    let mut repos = Vec::new();
    for (repo, split) in corpus.repos.iter().zip(&splits) {
        progress(&format!("{}: {}", split.as_str(), repo.name));
        let report: EvalReport = eval(repo, &weights, Vec::new())?;
        repos.push(RepoResult {
            name: repo.name.clone(),
            language: repo.language.clone(),
            split: *split,
            commit: repo.commit.clone(),
            commits_evaluated: report.commits_evaluated,
            files: report.files,
            function_commits: report.function_commits,
            methods: report.methods,
            function_methods: report.function_methods,
            seconds: report.seconds,
        });
    }
    let summary = summarise(&repos);
    Ok(CorpusReport {
        seed: options.seed,
        trials: options.trials,
        start_weights: options.weights.clone(),
        start_objective: objective[0],
        weights,
        objective: objective[best],
        search: tried.into_iter().zip(objective.iter().copied()).collect(),
        repos,
        summary,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Per set: all of it, then each language.
pub fn summarise(repos: &[RepoResult]) -> Vec<GroupSummary> {
    // `None` is the whole set; it sorts first.
    let mut groups: BTreeMap<(Split, Option<String>), Vec<&RepoResult>> = BTreeMap::new();
    for repo in repos {
        groups.entry((repo.split, None)).or_default().push(repo);
        groups
            .entry((repo.split, Some(language_key(&repo.language))))
            .or_default()
            .push(repo);
    }
    groups
        .into_iter()
        .map(|((split, key), members)| {
            // A language is named as the corpus spells it (its first repository's spelling).
            let group = match key {
                None => "all".to_owned(),
                Some(_) => members[0].language.clone(),
            };
            let n = members.len() as f64;
            let mean_of =
                |f: &dyn Fn(&RepoResult) -> f64| members.iter().map(|r| f(r)).sum::<f64>() / n;
            let methods = ["orion", "bm25", "repo_map"];
            let file_recall = methods
                .iter()
                .map(|m| ((*m).to_owned(), mean_of(&|r| r.file_recall(m))))
                .collect();
            // Over the repositories with a commit that changed a function (none would count
            // as a recall of 0).
            let with_functions: Vec<&&RepoResult> =
                members.iter().filter(|r| r.function_commits > 0).collect();
            let function_recall = methods
                .iter()
                .map(|m| {
                    let sum: f64 = with_functions.iter().map(|r| r.function_recall(m)).sum();
                    ((*m).to_owned(), sum / with_functions.len().max(1) as f64)
                })
                .collect();
            let leads: Vec<f64> = members
                .iter()
                .map(|r| 100.0 * (r.file_recall("orion") - r.file_recall("bm25")))
                .collect();
            let lead_mean = leads.iter().sum::<f64>() / n;
            let lead_sd = (leads.iter().map(|l| (l - lead_mean).powi(2)).sum::<f64>() / n).sqrt();
            GroupSummary {
                split,
                group,
                repos: members.len(),
                file_recall,
                lead_mean,
                lead_sd,
                lead_min: leads.iter().copied().fold(f64::INFINITY, f64::min),
                function_recall,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str, language: &str) -> CorpusRepo {
        CorpusRepo {
            name: name.into(),
            language: language.into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
        }
    }

    #[test]
    fn the_split_is_fixed_by_names_alone_one_of_each_pair_per_language() {
        let repos = vec![
            repo("a/one", "Rust"),
            repo("b/two", "Rust"),
            repo("c/three", "Go"),
            repo("d/four", "go"),
            repo("e/five", "Go"),
            repo("f/six", "Java"),
        ];
        let splits = split(&repos);
        let of = |repos: &[CorpusRepo], splits: &[Split]| -> BTreeMap<String, Split> {
            repos
                .iter()
                .map(|r| r.name.clone())
                .zip(splits.iter().copied())
                .collect()
        };
        let first = of(&repos, &splits);
        // Listed in another order: the same sets.
        let mut reversed = repos.clone();
        reversed.reverse();
        assert_eq!(of(&reversed, &split(&reversed)), first);
        let held = |names: &[&str]| {
            names
                .iter()
                .filter(|n| first[**n] == Split::HeldOut)
                .count()
        };
        assert_eq!(held(&["a/one", "b/two"]), 1);
        assert_eq!(
            held(&["c/three", "d/four", "e/five"]),
            1,
            "languages meet in any case"
        );
        assert_eq!(first["f/six"], Split::Tuning, "a lone language only tunes");
    }

    #[test]
    fn a_corpus_that_names_a_path_outside_its_folder_or_a_repository_twice_is_refused() {
        let entry = |name: &str, commit: &str| {
            format!("[[repo]]\nname = \"{name}\"\nlanguage = \"Rust\"\ncommit = \"{commit}\"\n")
        };
        let good = "0123456789abcdef0123456789abcdef01234567";
        assert!(Corpus::parse(&entry("sharkdp/fd", good)).is_ok());
        for name in [
            "../etc",
            "a/../../b",
            "/abs/path",
            "a/b/c",
            "a",
            "a/.",
            "a/..",
            "a/b c",
            "",
        ] {
            let refused = Corpus::parse(&entry(name, good));
            assert!(
                matches!(refused, Err(CorpusError::Invalid(_))),
                "{name}: {refused:?}"
            );
        }
        for commit in [
            "HEAD",
            "main",
            "abc",
            "0123456",
            "0123456789abcdef0123456789abcdef012345678",
        ] {
            assert!(Corpus::parse(&entry("a/b", commit)).is_err(), "{commit}");
        }
        let twice = format!("{}{}", entry("a/b", good), entry("A/B", good));
        assert!(
            Corpus::parse(&twice)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(Corpus::parse("").is_err(), "no repositories");
        assert!(Corpus::parse(&format!("{}url = \"x\"\n", entry("a/b", good))).is_err());
    }

    /// A small Python repository whose commits each change a file or two, their messages
    /// naming words of what they change (and of what they do not), drawn from `seed`.
    fn synthetic(root: &Path, seed: u64) -> String {
        git2::Repository::init(root).unwrap();
        let topics = [
            "parser", "network", "storage", "render", "config", "logging",
        ];
        let mut random = SplitMix64::new(seed);
        let mut last = None;
        for n in 0..24u64 {
            let a = (random.next_u64() % topics.len() as u64) as usize;
            let b = (random.next_u64() % topics.len() as u64) as usize;
            let mut changed = vec![a];
            if random.unit() < 0.5 && b != a {
                changed.push(b);
            }
            for &t in &changed {
                let topic = topics[t];
                let body: String = (0..=n)
                    .map(|i| format!("def {topic}_step_{i}(value):\n    return value + {i}\n\n"))
                    .collect();
                std::fs::write(root.join(format!("{topic}.py")), body).unwrap();
            }
            // The message names the first changed topic, or (sometimes) another one.
            let named = if random.unit() < 0.7 {
                topics[a]
            } else {
                topics[(random.next_u64() % topics.len() as u64) as usize]
            };
            let message = format!("Tidy the {named} step {n}");
            last = Some(crate::code::tests::commit_all(
                root,
                &message,
                Some(1_700_000_000 + 60 * n as i64),
            ));
        }
        last.unwrap().to_string()
    }

    /// The root commit of the repository at `root`.
    fn first_commit(root: &Path) -> String {
        let repo = git2::Repository::open(root).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push_head().unwrap();
        walk.set_sorting(git2::Sort::TIME | git2::Sort::REVERSE)
            .unwrap();
        walk.next().unwrap().unwrap().to_string()
    }

    #[test]
    fn the_weights_are_chosen_on_the_tuning_set_and_no_held_out_repository_moves_them() {
        let base = std::env::temp_dir().join(format!("orion-corpus-{}", uuid::Uuid::new_v4()));
        let mut corpus = Corpus { repos: Vec::new() };
        for (i, name) in ["o/alpha", "o/beta", "o/gamma", "o/delta"]
            .iter()
            .enumerate()
        {
            let commit = synthetic(&base.join("first").join(name), i as u64);
            corpus.repos.push(CorpusRepo {
                name: (*name).into(),
                language: if i < 2 { "Python" } else { "Other" }.into(),
                commit,
            });
        }
        let options = CorpusOptions {
            repos: base.join("first"),
            commits: 50,
            trials: 8,
            seed: 7,
            weights: SelectWeights::default(),
            threads: 1,
        };
        let first = run(&corpus, &options, |_| {}).unwrap();
        assert_eq!(first.search.len(), 9);
        assert_eq!(first.search[0].0, SelectWeights::default());
        let best = first.search.iter().map(|s| s.1).fold(f64::MIN, f64::max);
        assert_eq!(first.objective, best, "the best tuning mean is chosen");
        assert!(
            first.search.iter().any(|s| s.1 != best),
            "the settings differ on the tuning set, so the choice means something"
        );
        let held: Vec<&RepoResult> = first
            .repos
            .iter()
            .filter(|r| r.split == Split::HeldOut)
            .collect();
        assert_eq!(held.len(), 2, "one of each language");
        assert!(held.iter().all(|r| r.commits_evaluated > 0));

        // The held-out repositories replaced by others (other histories under the same
        // names): the same weights, the same tuning figures; only the held-out ones move.
        let mut second_corpus = corpus.clone();
        for (i, repo) in second_corpus.repos.iter_mut().enumerate() {
            let from = base.join("first").join(&repo.name);
            let to = base.join("second").join(&repo.name);
            if first.repos[i].split == Split::HeldOut {
                repo.commit = synthetic(&to, 100 + i as u64);
            } else {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::os::unix::fs::symlink(&from, &to).unwrap();
            }
        }
        let second = run(
            &second_corpus,
            &CorpusOptions {
                repos: base.join("second"),
                ..options.clone()
            },
            |_| {},
        )
        .unwrap();
        assert_eq!(second.weights, first.weights);
        assert_eq!(second.search, first.search);
        for (a, b) in first.repos.iter().zip(&second.repos) {
            match a.split {
                Split::Tuning => assert_eq!(a.methods, b.methods, "{}", a.name),
                Split::HeldOut => assert_ne!(a.methods, b.methods, "{}", a.name),
            }
        }

        // A clone that is missing, or lacks its commit: a clear error before anything runs.
        let mut missing = corpus.clone();
        missing.repos[0].name = "o/nowhere".into();
        let error = run(&missing, &options, |_| {}).unwrap_err().to_string();
        assert!(
            error.contains("o/nowhere") && error.contains("git clone"),
            "{error}"
        );
        let mut moved = corpus.clone();
        moved.repos[1].commit = "0123456789abcdef0123456789abcdef01234567".into();
        let error = run(&moved, &options, |_| {}).unwrap_err().to_string();
        assert!(error.contains("does not have commit"), "{error}");
        // An empty folder inside a repository is no clone, though git would find the
        // repository around it; a shallow clone is refused; so is a history with nothing to
        // measure (it would count as a recall of 0).
        let outer = base.join("outer");
        let inner_name = "o/empty";
        git2::Repository::init(&outer).unwrap();
        std::fs::create_dir_all(outer.join(inner_name)).unwrap();
        let mut inside = corpus.clone();
        inside.repos[0].name = inner_name.into();
        let error = run(
            &inside,
            &CorpusOptions {
                repos: outer.clone(),
                ..options.clone()
            },
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a git repository"), "{error}");
        let shallow = base.join("shallow");
        let status = std::process::Command::new("git")
            .args(["clone", "-q", "--bare", "--depth", "3"])
            .arg(format!("file://{}", base.join("first/o/alpha").display()))
            .arg(shallow.join("o/alpha"))
            .status()
            .unwrap();
        assert!(status.success());
        let error = run(
            &corpus,
            &CorpusOptions {
                repos: shallow,
                ..options.clone()
            },
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("shallow"), "{error}");
        let mut nothing = corpus.clone();
        nothing.repos[2].commit = first_commit(&base.join("first").join(&corpus.repos[2].name));
        let error = run(&nothing, &options, |_| {}).unwrap_err().to_string();
        assert!(error.contains("no commit qualifies"), "{error}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
