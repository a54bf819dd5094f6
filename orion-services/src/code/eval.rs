//! The evaluation of context selection on a repository's own history: each small commit is a
//! task (its message) on a known state (its parent), and the files it changed are the answer.
//!
//! Nothing of a commit leaks into its own evaluation: the state is the parent's tree, read
//! from git's objects, and co-change counts come only from commits older than it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::engine::{Source, parallel};
use super::select::{self, CoChange, FileDoc, SelectWeights};
use super::walk::{self, MAX_FILE_BYTES};
use crate::vcs::{History, VcsError};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// How many qualifying commits, newest first.
    pub commits: usize,
    /// The cut-offs of recall@k.
    pub ks: Vec<usize>,
    /// A commit qualifies when it changes this many source files (inclusive).
    pub min_files: usize,
    pub max_files: usize,
    /// How many commits of history are read (for co-change and to find qualifying ones).
    pub history: usize,
    pub weights: SelectWeights,
    pub threads: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            commits: 200,
            ks: vec![1, 5, 10],
            min_files: 1,
            max_files: 5,
            history: 5000,
            weights: SelectWeights::default(),
            threads: super::engine::all_cores(),
        }
    }
}

/// How one method did over the evaluated commits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodScore {
    pub method: String,
    /// recall@k by k (the share of a commit's files in the first k, averaged over commits).
    pub recall: BTreeMap<usize, f64>,
    /// Mean reciprocal rank of the first changed file.
    pub mrr: f64,
}

/// One evaluated commit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommitEval {
    pub commit: String,
    pub subject: String,
    /// The changed source files that existed in the parent (the answer).
    pub files: Vec<String>,
    /// Each method's rank (1-based) of each answer file, `None` where unranked.
    pub ranks: BTreeMap<String, Vec<Option<usize>>>,
}

/// The evaluation's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub commits_evaluated: usize,
    /// Source files in the newest evaluated state.
    pub files: usize,
    pub methods: Vec<MethodScore>,
    pub seconds: f64,
    pub commits: Vec<CommitEval>,
}

/// The methods compared, in report order.
pub const METHODS: [&str; 3] = ["orion", "bm25", "repo_map"];

/// Evaluates context selection on the history of the repository at `root`.
pub fn evaluate(root: &Path, options: &EvalOptions) -> Result<EvalReport, VcsError> {
    let started = Instant::now();
    let history = History::open(root)?;
    let commits = history.commits(options.history)?;
    let is_source = |f: &String| walk::admits(f).is_some();
    // The newest qualifying commits; the rest only feed co-change.
    let chosen: HashSet<&str> = commits
        .iter()
        .filter(|c| c.parent.is_some())
        .filter(|c| {
            let n = c.files.iter().filter(|f| is_source(f)).count();
            (options.min_files..=options.max_files).contains(&n)
        })
        .take(options.commits)
        .map(|c| c.id.as_str())
        .collect();

    let mut cochange = CoChange::default();
    let mut cache: HashMap<(String, String), Option<Arc<FileDoc>>> = HashMap::new();
    let mut evaluated = Vec::new();
    let mut newest_files = 0;
    for commit in commits.iter().rev() {
        if chosen.contains(commit.id.as_str())
            && let Some(parent) = &commit.parent
        {
            let docs = state(&history, parent, &mut cache, options.threads)?;
            newest_files = docs.len();
            let present: HashSet<&str> = docs.iter().map(|d| d.path.as_str()).collect();
            let answer: Vec<String> = commit
                .files
                .iter()
                .filter(|f| present.contains(f.as_str()))
                .cloned()
                .collect();
            if !answer.is_empty() {
                let refs: Vec<&FileDoc> = docs.iter().map(|d| d.as_ref()).collect();
                evaluated.push(rank_all(commit, &refs, answer, &cochange, &options.weights));
            }
        }
        cochange.add_commit(&commit.files);
    }
    evaluated.reverse(); // newest first, as history reads
    let methods = METHODS
        .iter()
        .map(|m| score(m, &evaluated, &options.ks))
        .collect();
    Ok(EvalReport {
        commits_evaluated: evaluated.len(),
        files: newest_files,
        methods,
        seconds: started.elapsed().as_secs_f64(),
        commits: evaluated,
    })
}

/// The source files of a commit's tree as documents, each blob read and parsed once over
/// the whole evaluation.
fn state(
    history: &History,
    commit: &str,
    cache: &mut HashMap<(String, String), Option<Arc<FileDoc>>>,
    threads: usize,
) -> Result<Vec<Arc<FileDoc>>, VcsError> {
    let files: Vec<(String, String)> = history
        .files_at(commit)?
        .into_iter()
        .filter(|(path, _)| walk::admits(path).is_some())
        .collect();
    let mut missing = Vec::new();
    for (path, blob) in &files {
        let key = (path.clone(), blob.clone());
        if cache.contains_key(&key) {
            continue;
        }
        let bytes = history.blob(blob)?;
        let language = walk::admits(path).expect("filtered above");
        if bytes.len() as u64 > MAX_FILE_BYTES || walk::content_skip(&bytes).is_some() {
            cache.insert(key, None);
        } else {
            missing.push((
                key,
                Source {
                    path: path.clone(),
                    language,
                    bytes,
                },
            ));
        }
    }
    let sources: Vec<&Source> = missing.iter().map(|(_, s)| s).collect();
    let built = parallel(&sources, threads, |parser, s| FileDoc::build(parser, s));
    for ((key, _), doc) in missing.into_iter().zip(built) {
        cache.insert(key, Some(Arc::new(doc)));
    }
    Ok(files
        .into_iter()
        .filter_map(|key| cache.get(&key).cloned().flatten())
        .collect())
}

/// Every method's ranks of the answer files for one commit.
fn rank_all(
    commit: &crate::vcs::CommitFiles,
    docs: &[&FileDoc],
    answer: Vec<String>,
    cochange: &CoChange,
    weights: &SelectWeights,
) -> CommitEval {
    let query = commit.message.as_str();
    let orion: Vec<String> = select::select(docs, query, Some(cochange), weights)
        .into_iter()
        .map(|r| r.path)
        .collect();
    let terms: Vec<String> = select::words(query).collect();
    let by = |scores: Vec<f64>| -> Vec<String> {
        select::order_by(&scores)
            .into_iter()
            .map(|i| docs[i].path.clone())
            .collect()
    };
    let rankings = [
        orion,
        by(select::bm25(docs, &terms, false)),
        by(select::map_rank(docs)),
    ];
    let ranks = METHODS
        .iter()
        .zip(rankings)
        .map(|(method, ranking)| {
            let position: HashMap<&str, usize> = ranking
                .iter()
                .enumerate()
                .map(|(i, p)| (p.as_str(), i + 1))
                .collect();
            let ranks = answer
                .iter()
                .map(|f| position.get(f.as_str()).copied())
                .collect();
            ((*method).to_owned(), ranks)
        })
        .collect();
    CommitEval {
        commit: commit.id.clone(),
        subject: commit.message.lines().next().unwrap_or("").to_owned(),
        files: answer,
        ranks,
    }
}

/// A method's recall@k and MRR over the evaluated commits.
fn score(method: &str, evaluated: &[CommitEval], ks: &[usize]) -> MethodScore {
    let n = evaluated.len().max(1) as f64;
    let recall = ks
        .iter()
        .map(|&k| {
            let sum: f64 = evaluated
                .iter()
                .map(|c| {
                    let ranks = &c.ranks[method];
                    let hits = ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count();
                    hits as f64 / ranks.len() as f64
                })
                .sum();
            (k, sum / n)
        })
        .collect();
    let mrr = evaluated
        .iter()
        .map(|c| {
            c.ranks[method]
                .iter()
                .flatten()
                .min()
                .map_or(0.0, |r| 1.0 / *r as f64)
        })
        .sum::<f64>()
        / n;
    MethodScore {
        method: method.to_owned(),
        recall,
        mrr,
    }
}
