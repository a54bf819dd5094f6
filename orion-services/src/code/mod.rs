//! Code intelligence over tree-sitter: what is in a repository, measured per file and per
//! function, exact enough to trust and fast enough for every pull request.
//!
//! Parsing is CPU work: [`TreeSitterIntel`] runs it on blocking threads, every file read once
//! and parsed once, spread over all cores by a shared work index (so one huge file does not
//! hold up a whole chunk). The counting rules per language are in [`language`].

mod context;
pub mod corpus;
mod deps;
mod diff;
mod engine;
pub mod eval;
pub mod export;
mod file;
mod function;
pub mod language;
mod lines;
mod report;
pub mod select;
mod symbols;
#[cfg(test)]
mod tests;
mod walk;

use std::path::{Path, PathBuf};

use async_trait::async_trait;

pub use context::{
    CUT_MARK, EXCERPT_BYTES, EXCERPTS, EXPLAINED_FILES, Excerpt, PromptContext,
    RELEVANT_FILE_BYTES, RELEVANT_FILES, prompt_context,
};
pub use deps::{DependencyGraph, LanguageGraph, dependency_graph};
pub use diff::{ChangedFunction, DiffReport, DiffScore, score as score_change};
pub use engine::{Source, all_cores, analyze_sources, load_sources, parse_only};
pub use file::FileAnalysis;
pub use function::FunctionMetrics;
pub use language::Language;
pub use report::{
    ComplexFunction, FileSummary, FunctionList, Hotspot, LanguageTotals, MAX_LISTED_FILES,
    RepoReport, SkipCounts, Summary,
};
pub use symbols::{Location, RepoMap, SymbolIndex, Tag, tags};
pub use walk::{MAX_FILE_BYTES, Skip};

/// Why an analysis could not run.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("repository path `{0}` does not exist")]
    NotFound(PathBuf),
    #[error("repository path `{0}` is not a directory")]
    NotADirectory(PathBuf),
    #[error("could not read the repository: {0}")]
    Io(#[from] std::io::Error),
    #[error("the analysis was interrupted: {0}")]
    Interrupted(String),
}

/// Code intelligence as the agents see it.
#[async_trait]
pub trait CodeIntel: Send + Sync + 'static {
    /// Measures every supported source file under `root`.
    async fn analyze(&self, root: &Path) -> Result<RepoReport, CodeError>;

    /// The module dependency graph of the repository at `root`.
    async fn dependencies(&self, root: &Path) -> Result<DependencyGraph, CodeError>;

    /// The definitions and references of the repository at `root`, for navigation and the
    /// repository map.
    async fn symbols(&self, root: &Path) -> Result<SymbolIndex, CodeError>;

    /// What a prompt about `query` shows of the repository: the map within `map_tokens` and
    /// the files context selection ranks first (with `weights`, and the co-change history
    /// of the repository where it is a git checkout), from one reading of it.
    async fn context(
        &self,
        root: &Path,
        query: &str,
        map_tokens: usize,
        weights: &select::SelectWeights,
    ) -> Result<PromptContext, CodeError>;
}

/// [`CodeIntel`] on tree-sitter grammars, using every core.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeSitterIntel;

/// Runs parsing work on a blocking thread, inside the caller's span.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, CodeError> + Send + 'static,
) -> Result<T, CodeError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| CodeError::Interrupted(e.to_string()))?
}

#[async_trait]
impl CodeIntel for TreeSitterIntel {
    async fn analyze(&self, root: &Path) -> Result<RepoReport, CodeError> {
        let root = root.to_owned();
        blocking(move || analyze_blocking(&root, engine::all_cores())).await
    }

    async fn dependencies(&self, root: &Path) -> Result<DependencyGraph, CodeError> {
        let root = root.to_owned();
        blocking(move || {
            let (files, _) = analyze_root(&root, engine::all_cores())?;
            Ok(dependency_graph(&files))
        })
        .await
    }

    async fn symbols(&self, root: &Path) -> Result<SymbolIndex, CodeError> {
        let root = root.to_owned();
        blocking(move || {
            Ok(SymbolIndex::build(
                &load_sources(&root)?,
                engine::all_cores(),
            ))
        })
        .await
    }

    async fn context(
        &self,
        root: &Path,
        query: &str,
        map_tokens: usize,
        weights: &select::SelectWeights,
    ) -> Result<PromptContext, CodeError> {
        let (root, query, weights) = (root.to_owned(), query.to_owned(), weights.clone());
        blocking(move || {
            let cochange = cochange_of(&root);
            Ok(prompt_context(
                &load_sources(&root)?,
                &query,
                map_tokens,
                engine::all_cores(),
                cochange.as_deref(),
                &weights,
            ))
        })
        .await
    }
}

/// Co-change histories kept in this process, by the commit they end at (and the folder
/// read): a prompt on a repository at a commit an earlier prompt read (another task on the
/// same base, a step run again) reads none of its commits again.
const COCHANGE_KEPT: usize = 16;

/// Which files changed together over the last [`crate::vcs::CHURN_COMMITS`] commits of the
/// repository at `root`, read from its history every time (what [`cochange_of`] keeps);
/// `None` outside a git repository.
pub fn read_cochange(root: &Path) -> Option<select::CoChange> {
    cochange_from(&crate::vcs::History::open(root).ok()?)
}

/// Which files changed together over the last [`crate::vcs::CHURN_COMMITS`] commits of
/// `history`.
fn cochange_from(history: &crate::vcs::History) -> Option<select::CoChange> {
    let commits = history.commits(crate::vcs::CHURN_COMMITS).ok()?;
    let mut cochange = select::CoChange::default();
    for commit in &commits {
        cochange.add_commit(&commit.files);
    }
    Some(cochange)
}

/// Which files changed together over the last [`crate::vcs::CHURN_COMMITS`] commits of the
/// repository at `root`; `None` outside a git repository. Read once per HEAD commit while it
/// is among the last [`COCHANGE_KEPT`] read.
pub fn cochange_of(root: &Path) -> Option<std::sync::Arc<select::CoChange>> {
    use std::sync::{Arc, Mutex};
    static KEPT: Mutex<Vec<(String, Arc<select::CoChange>)>> = Mutex::new(Vec::new());
    let history = crate::vcs::History::open(root).ok()?;
    let key = history.key();
    if let Some(key) = &key {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(at) = kept.iter().position(|(k, _)| k == key) {
            let hit = kept.remove(at);
            let cochange = hit.1.clone();
            kept.push(hit);
            return Some(cochange);
        }
    }
    let cochange = Arc::new(cochange_from(&history)?);
    if let Some(key) = key {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= COCHANGE_KEPT {
            kept.remove(0);
        }
        kept.push((key, cochange.clone()));
    }
    Some(cochange)
}

/// The synchronous analysis of a directory on `threads` threads.
pub fn analyze_blocking(root: &Path, threads: usize) -> Result<RepoReport, CodeError> {
    let (files, skips) = analyze_root(root, threads)?;
    Ok(RepoReport::build(files, skips))
}

/// Every function of a directory's files (those an analysis reads), by file and line.
pub fn function_rows(root: &Path, threads: usize) -> Result<Vec<export::FunctionRow>, CodeError> {
    Ok(analyze_blocking(root, threads)?.take_functions())
}

/// Every file of a directory the walk rules admit, measured, and what was skipped.
fn analyze_root(root: &Path, threads: usize) -> Result<(Vec<FileAnalysis>, SkipCounts), CodeError> {
    check_root(root)?;
    let (paths, too_large) = walk::source_files(root);
    let (files, mut skips) = engine::analyze_paths(root, &paths, threads);
    skips.too_large += too_large;
    Ok((files, skips))
}

/// Measures one file's text (a fresh parser; the engine reuses one per thread).
pub fn analyze_file(path: &str, language: Language, source: &[u8]) -> FileAnalysis {
    file::analyze(
        &mut tree_sitter::Parser::new(),
        path.to_owned(),
        language,
        source,
    )
}

/// A directory that exists, or why not.
pub fn check_root(root: &Path) -> Result<(), CodeError> {
    if !root.exists() {
        return Err(CodeError::NotFound(root.to_owned()));
    }
    if !root.is_dir() {
        return Err(CodeError::NotADirectory(root.to_owned()));
    }
    Ok(())
}

/// The files an analysis of `root` would read.
pub fn source_files(root: &Path) -> Result<Vec<(PathBuf, Language)>, CodeError> {
    check_root(root)?;
    Ok(walk::source_files(root).0)
}
