//! The evaluation of context selection on a repository's own history: each small commit is a
//! task (its message) on a known state (its parent), and the files it changed are the answer.
//!
//! Nothing of a commit leaks into its own evaluation: the state is the parent's tree, read
//! from git's objects, and co-change counts come only from commits older than it.
//!
//! A second answer is the functions the commit changed: those of the parent's files (by the
//! analyzer's spans) that hold a line the commit's diff touches (the innermost where they
//! nest). Each method ranks every function of the state: BM25 over the functions' text, the
//! repository map's file order, and Orion's file ranking with the function's own match to the
//! task added.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::engine::{Source, parallel};
use super::select::{self, CoChange, FileDoc, FunctionDoc, SelectWeights, Signals};
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
    /// Other weights whose file ranking is scored on the same commits in the same pass (the
    /// corpus evaluation's search): [`EvalReport::candidates`].
    pub candidates: Vec<SelectWeights>,
    /// Where history is read from (a commit id or a name git resolves); HEAD when `None`.
    pub rev: Option<String>,
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
            candidates: Vec::new(),
            rev: None,
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
    /// The functions it changed, as `path::name:line` (in the parent): the second answer.
    #[serde(default)]
    pub functions: Vec<String>,
    /// Each method's rank of each answer function among all of the state's functions.
    #[serde(default)]
    pub function_ranks: BTreeMap<String, Vec<Option<usize>>>,
}

/// The evaluation's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub commits_evaluated: usize,
    /// Source files in the newest evaluated state.
    pub files: usize,
    pub methods: Vec<MethodScore>,
    /// Commits that changed at least one function of the parent, and each method's scores on
    /// them at the function level.
    #[serde(default)]
    pub function_commits: usize,
    #[serde(default)]
    pub function_methods: Vec<MethodScore>,
    /// Orion's file scores with each of [`EvalOptions::candidates`], in order.
    #[serde(default)]
    pub candidates: Vec<MethodScore>,
    pub seconds: f64,
    pub commits: Vec<CommitEval>,
}

/// The methods compared, in report order.
pub const METHODS: [&str; 3] = ["orion", "bm25", "repo_map"];

/// Evaluates context selection on the history of the repository at `root`.
pub fn evaluate(root: &Path, options: &EvalOptions) -> Result<EvalReport, VcsError> {
    let started = Instant::now();
    let history = History::open(root)?;
    let commits = history.commits_from(options.rev.as_deref(), options.history)?;
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
    let mut cache: HashMap<(String, String), Option<Arc<Doc>>> = HashMap::new();
    let mut evaluated = Vec::new();
    let mut candidate_ranks: Vec<Vec<Vec<Option<usize>>>> =
        vec![Vec::new(); options.candidates.len()];
    let mut newest_files = 0;
    for commit in commits.iter().rev() {
        if chosen.contains(commit.id.as_str())
            && let Some(parent) = &commit.parent
        {
            let docs = state(&history, parent, &mut cache, options.threads)?;
            newest_files = docs.len();
            let present: HashMap<&str, &(String, Arc<Doc>)> =
                docs.iter().map(|d| (d.1.file.path.as_str(), d)).collect();
            let answer: Vec<String> = commit
                .files
                .iter()
                .filter(|f| present.contains_key(f.as_str()))
                .cloned()
                .collect();
            if !answer.is_empty() {
                let after: HashMap<String, String> =
                    history.files_at(&commit.id)?.into_iter().collect();
                let mut functions = BTreeSet::new();
                for file in &answer {
                    let (blob, doc) = present[file.as_str()];
                    let hunks = match after.get(file) {
                        Some(new) => history.changed_lines(blob, new)?,
                        None => vec![(1, u32::MAX)], // deleted: every line
                    };
                    functions.extend(changed_functions(&doc.functions, &hunks));
                }
                let docs: Vec<&Doc> = docs.iter().map(|d| d.1.as_ref()).collect();
                let (eval, candidates) = rank_all(
                    commit,
                    &docs,
                    answer,
                    functions.into_iter().collect(),
                    &cochange,
                    &options.weights,
                    &options.candidates,
                );
                evaluated.push(eval);
                for (all, ranks) in candidate_ranks.iter_mut().zip(candidates) {
                    all.push(ranks);
                }
            }
        }
        cochange.add_commit(&commit.files);
    }
    evaluated.reverse(); // newest first, as history reads
    let methods = METHODS
        .iter()
        .map(|m| {
            let ranks: Vec<&[Option<usize>]> =
                evaluated.iter().map(|c| c.ranks[*m].as_slice()).collect();
            score(m, &ranks, &options.ks)
        })
        .collect();
    let with_functions: Vec<&CommitEval> = evaluated
        .iter()
        .filter(|c| !c.functions.is_empty())
        .collect();
    let function_methods = METHODS
        .iter()
        .map(|m| {
            let ranks: Vec<&[Option<usize>]> = with_functions
                .iter()
                .map(|c| c.function_ranks[*m].as_slice())
                .collect();
            score(m, &ranks, &options.ks)
        })
        .collect();
    let candidates = candidate_ranks
        .iter()
        .enumerate()
        .map(|(i, ranks)| {
            let ranks: Vec<&[Option<usize>]> = ranks.iter().map(Vec::as_slice).collect();
            score(&format!("candidate {i}"), &ranks, &options.ks)
        })
        .collect();
    Ok(EvalReport {
        commits_evaluated: evaluated.len(),
        files: newest_files,
        methods,
        function_commits: with_functions.len(),
        function_methods,
        candidates,
        seconds: started.elapsed().as_secs_f64(),
        commits: evaluated,
    })
}

/// One file of a state: its document, and its functions as documents of their own.
struct Doc {
    file: FileDoc,
    functions: Vec<FunctionDoc>,
}

/// The functions that hold a line of `hunks` (old side: first line and count, a count of 0
/// an insertion after that line), the innermost where they nest.
fn changed_functions(functions: &[FunctionDoc], hunks: &[(u32, u32)]) -> BTreeSet<String> {
    let mut changed = BTreeSet::new();
    let last_end = functions.iter().map(|f| f.end).max().unwrap_or(0);
    for &(start, count) in hunks {
        let lines = if count == 0 {
            start..start.saturating_add(1)
        } else {
            start..start.saturating_add(count)
        };
        for line in lines {
            let inner = functions
                .iter()
                .filter(|f| f.start <= line && line <= f.end && (count > 0 || line < f.end))
                .min_by_key(|f| f.end - f.start);
            match inner {
                Some(f) => {
                    changed.insert(f.id.clone());
                }
                // Past the last function: the rest of the hunk holds none.
                None if last_end < line => break,
                None => {}
            }
        }
    }
    changed
}

/// The source files of a commit's tree as documents, each blob read and parsed once over
/// the whole evaluation.
fn state(
    history: &History,
    commit: &str,
    cache: &mut HashMap<(String, String), Option<Arc<Doc>>>,
    threads: usize,
) -> Result<Vec<(String, Arc<Doc>)>, VcsError> {
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
    let built = parallel(&sources, threads, |parser, s| {
        let file = FileDoc::build(parser, s);
        let functions = FunctionDoc::of(s, &file);
        Doc { file, functions }
    });
    for ((key, _), doc) in missing.into_iter().zip(built) {
        cache.insert(key, Some(Arc::new(doc)));
    }
    Ok(files
        .into_iter()
        .filter_map(|key| Some((key.1.clone(), cache.get(&key).cloned().flatten()?)))
        .collect())
}

/// Where each of `answer` stands in `ranking` (1-based), `None` where it is not ranked.
fn ranks_in(ranking: &[String], answer: &[String]) -> Vec<Option<usize>> {
    let position: HashMap<&str, usize> = ranking
        .iter()
        .enumerate()
        .map(|(i, p)| (p.as_str(), i + 1))
        .collect();
    answer
        .iter()
        .map(|f| position.get(f.as_str()).copied())
        .collect()
}

/// Every method's ranks of the answer files, and of the answer functions, for one commit; and
/// Orion's ranks of the answer files with each of `candidates`.
fn rank_all(
    commit: &crate::vcs::CommitFiles,
    docs: &[&Doc],
    answer: Vec<String>,
    functions: Vec<String>,
    cochange: &CoChange,
    weights: &SelectWeights,
    candidates: &[SelectWeights],
) -> (CommitEval, Vec<Vec<Option<usize>>>) {
    let query = commit.message.as_str();
    let files: Vec<&FileDoc> = docs.iter().map(|d| &d.file).collect();
    let signals = Signals::new(&files, query, Some(cochange));
    let selected = signals.rank(weights);
    let paths = |ranked: Vec<select::Ranked>| -> Vec<String> {
        ranked.into_iter().map(|r| r.path).collect()
    };
    let candidate_ranks = candidates
        .iter()
        .map(|w| ranks_in(&paths(signals.rank(w)), &answer))
        .collect();
    let terms: Vec<String> = select::words(query).collect();
    let by = |scores: Vec<f64>| -> Vec<String> {
        select::order_by(&scores)
            .into_iter()
            .map(|i| files[i].path.clone())
            .collect()
    };
    let map = select::map_rank(&files);
    let rankings = [
        paths(selected.clone()),
        by(select::bm25(&files, &terms, false)),
        by(map.clone()),
    ];
    let ranks = METHODS
        .iter()
        .zip(rankings)
        .map(|(method, ranking)| ((*method).to_owned(), ranks_in(&ranking, &answer)))
        .collect();

    // The functions: every one of the state's, ranked by each method.
    let owned: Vec<(usize, &FunctionDoc)> = docs
        .iter()
        .enumerate()
        .flat_map(|(file, d)| d.functions.iter().map(move |f| (file, f)))
        .collect();
    let function_refs: Vec<&FunctionDoc> = owned.iter().map(|(_, f)| *f).collect();
    let function_docs: Vec<&FileDoc> = owned.iter().map(|(_, f)| &f.doc).collect();
    let by_function = |scores: Vec<f64>| -> Vec<String> {
        select::order_by(&scores)
            .into_iter()
            .map(|i| owned[i].1.id.clone())
            .collect()
    };
    let function_rankings = [
        by_function(select::function_scores(&selected, &function_refs, query)),
        by_function(select::bm25(&function_docs, &terms, false)),
        // The map ranks files; their functions follow in the file's order.
        by_function(owned.iter().map(|(file, _)| map[*file]).collect()),
    ];
    let function_ranks = METHODS
        .iter()
        .zip(function_rankings)
        .map(|(method, ranking)| ((*method).to_owned(), ranks_in(&ranking, &functions)))
        .collect();
    let eval = CommitEval {
        commit: commit.id.clone(),
        subject: commit.message.lines().next().unwrap_or("").to_owned(),
        files: answer,
        ranks,
        functions,
        function_ranks,
    };
    (eval, candidate_ranks)
}

/// A method's recall@k and MRR over the evaluated commits, given its ranks of each commit's
/// answer.
fn score(method: &str, evaluated: &[&[Option<usize>]], ks: &[usize]) -> MethodScore {
    let n = evaluated.len().max(1) as f64;
    let recall = ks
        .iter()
        .map(|&k| {
            let sum: f64 = evaluated
                .iter()
                .map(|ranks| {
                    let hits = ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count();
                    hits as f64 / ranks.len().max(1) as f64
                })
                .sum();
            (k, sum / n)
        })
        .collect();
    let mrr = evaluated
        .iter()
        .map(|ranks| {
            ranks
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

#[cfg(test)]
mod tests {
    use super::{FunctionDoc, changed_functions};

    fn function(id: &str, start: u32, end: u32) -> FunctionDoc {
        FunctionDoc {
            id: id.to_owned(),
            start,
            end,
            ..FunctionDoc::default()
        }
    }

    #[test]
    fn a_change_belongs_to_the_innermost_function_holding_its_lines() {
        let functions = [
            function("outer", 1, 10),
            function("inner", 3, 5),
            function("other", 12, 15),
        ];
        let changed = |hunks: &[(u32, u32)]| -> Vec<String> {
            changed_functions(&functions, hunks).into_iter().collect()
        };
        assert_eq!(changed(&[(4, 1)]), ["inner"]);
        assert_eq!(
            changed(&[(8, 0)]),
            ["outer"],
            "an insertion inside the body"
        );
        assert!(
            changed(&[(10, 0)]).is_empty(),
            "an insertion after the last line"
        );
        assert!(changed(&[(0, 0), (11, 1), (20, 3)]).is_empty());
        assert_eq!(changed(&[(5, 8)]), ["inner", "other", "outer"]);
    }
}
