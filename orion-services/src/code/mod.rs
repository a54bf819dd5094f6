//! Code intelligence over tree-sitter: what is in a repository, measured per file.
//!
//! This first cut counts lines (total, code, comment, blank) and functions per file for
//! Rust and Python. Parsing is CPU work, so [`TreeSitterIntel::analyze`] runs it on blocking
//! threads, spread over every core.

mod lines;
mod walk;

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tree_sitter::{Language as Grammar, Node, Parser};

/// At most this many files are listed one by one in a report; totals cover every file.
pub const MAX_LISTED_FILES: usize = 2000;

/// A language Orion can parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
}

impl Language {
    /// Chosen by file extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "rs" => Some(Language::Rust),
            "py" | "pyi" => Some(Language::Python),
            _ => None,
        }
    }

    fn grammar(self) -> Grammar {
        match self {
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::Python => tree_sitter_python::LANGUAGE.into(),
        }
    }

    /// Node kinds that are comments.
    fn is_comment(self, kind: &str) -> bool {
        match self {
            Language::Rust => matches!(kind, "line_comment" | "block_comment"),
            Language::Python => kind == "comment",
        }
    }

    /// Node kinds that are named function definitions (free functions, methods, nested
    /// functions; closures and lambdas are not counted).
    fn is_function(self, kind: &str) -> bool {
        match self {
            Language::Rust => kind == "function_item",
            Language::Python => kind == "function_definition",
        }
    }
}

/// Measures of one source file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetrics {
    /// Relative to the analysed root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub lines: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
    pub functions: u64,
    /// The parser met syntax errors; the counts cover what parsed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syntax_errors: bool,
}

/// Sums over the files of one language.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageTotals {
    pub files: u64,
    pub lines: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
    pub functions: u64,
}

/// What an analysis found in a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoReport {
    pub totals: std::collections::BTreeMap<Language, LanguageTotals>,
    /// The largest files first, at most [`MAX_LISTED_FILES`].
    pub files: Vec<FileMetrics>,
    /// Whether `files` was cut to [`MAX_LISTED_FILES`].
    pub files_truncated: bool,
    /// Files skipped as too large or unreadable.
    pub skipped: u64,
}

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
}

/// [`CodeIntel`] on tree-sitter grammars.
#[derive(Clone, Copy, Debug, Default)]
pub struct TreeSitterIntel;

#[async_trait]
impl CodeIntel for TreeSitterIntel {
    async fn analyze(&self, root: &Path) -> Result<RepoReport, CodeError> {
        let root = root.to_owned();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| analyze_blocking(&root)))
            .await
            .map_err(|e| CodeError::Interrupted(e.to_string()))?
    }
}

/// The synchronous analysis: walk, then parse the files on every core.
pub fn analyze_blocking(root: &Path) -> Result<RepoReport, CodeError> {
    if !root.exists() {
        return Err(CodeError::NotFound(root.to_owned()));
    }
    if !root.is_dir() {
        return Err(CodeError::NotADirectory(root.to_owned()));
    }
    let (sources, too_large) = walk::source_files(root)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(sources.len().max(1));
    let chunk = sources.len().div_ceil(workers).max(1);
    let results: Vec<Option<FileMetrics>> = std::thread::scope(|scope| {
        let handles: Vec<_> = sources
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    let mut parser = Parser::new();
                    part.iter()
                        .map(|(path, lang)| measure_file(&mut parser, root, path, *lang))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let skipped = too_large + results.iter().filter(|r| r.is_none()).count() as u64;
    let mut files: Vec<FileMetrics> = results.into_iter().flatten().collect();
    let mut totals = std::collections::BTreeMap::<Language, LanguageTotals>::new();
    for f in &files {
        let t = totals.entry(f.language).or_default();
        t.files += 1;
        t.lines += f.lines;
        t.code += f.code;
        t.comment += f.comment;
        t.blank += f.blank;
        t.functions += f.functions;
    }
    files.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.path.cmp(&b.path)));
    let files_truncated = files.len() > MAX_LISTED_FILES;
    files.truncate(MAX_LISTED_FILES);
    Ok(RepoReport {
        totals,
        files,
        files_truncated,
        skipped,
    })
}

fn measure_file(
    parser: &mut Parser,
    root: &Path,
    path: &Path,
    language: Language,
) -> Option<FileMetrics> {
    let source = std::fs::read(path).ok()?;
    let relative = path
        .strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/");
    Some(measure_source(parser, relative, language, &source))
}

/// Measures one file's text.
pub fn measure_source(
    parser: &mut Parser,
    path: String,
    language: Language,
    source: &[u8],
) -> FileMetrics {
    let mut comments = Vec::new();
    let mut functions = 0;
    let mut syntax_errors = true;
    if parser.set_language(&language.grammar()).is_ok()
        && let Some(tree) = parser.parse(source, None)
    {
        let root = tree.root_node();
        syntax_errors = root.has_error();
        visit(root, &mut |node| {
            if language.is_comment(node.kind()) {
                comments.push(node.byte_range());
            } else if language.is_function(node.kind()) {
                functions += 1;
            }
        });
    }
    let lines = lines::count(source, &comments);
    FileMetrics {
        path,
        language,
        lines: lines.total,
        code: lines.code,
        comment: lines.comment,
        blank: lines.blank,
        functions,
        syntax_errors,
    }
}

/// Pre-order walk of every node, with a cursor (no recursion, so deep trees are safe).
fn visit(root: Node<'_>, f: &mut impl FnMut(Node<'_>)) {
    let mut cursor = root.walk();
    loop {
        f(cursor.node());
        if cursor.goto_first_child() {
            continue;
        }
        loop {
            if cursor.goto_next_sibling() {
                break;
            }
            if !cursor.goto_parent() {
                return;
            }
        }
    }
}
