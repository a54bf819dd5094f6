//! What a model is shown of a repository for a task: the repository map and the files that
//! context selection ranks first ([`super::select`]), from one reading and one parse of the
//! repository.

use serde::{Deserialize, Serialize};

use super::engine::{Source, parallel};
use super::select::{self, CoChange, FileDoc, Ranked, SelectWeights};
use super::symbols::{RepoMap, SymbolIndex};

/// How many files are shown whole, and how much of each.
pub const RELEVANT_FILES: usize = 3;
pub const RELEVANT_FILE_BYTES: usize = 8 * 1024;
/// How many ranked files a context keeps, to explain the choice.
pub const EXPLAINED_FILES: usize = 10;

/// The repository as a prompt sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptContext {
    pub map: RepoMap,
    /// (path, text) of the files shown, each cut to [`RELEVANT_FILE_BYTES`].
    pub files: Vec<(String, String)>,
    /// The best-ranked files with their signals (the first [`RELEVANT_FILES`] are shown).
    pub selection: Vec<Ranked>,
}

/// A file's text for a prompt, cut to [`RELEVANT_FILE_BYTES`].
fn excerpt(source: &Source) -> String {
    let mut text = String::from_utf8_lossy(&source.bytes).into_owned();
    if text.len() > RELEVANT_FILE_BYTES {
        let mut cut = RELEVANT_FILE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut)\n");
    }
    text
}

/// The map within `map_tokens` and the selected files, from sources read once and parsed
/// once; `cochange` is the repository's history, where it has one.
pub fn prompt_context(
    sources: &[Source],
    query: &str,
    map_tokens: usize,
    threads: usize,
    cochange: Option<&CoChange>,
    weights: &SelectWeights,
) -> PromptContext {
    let docs = parallel(sources, threads, FileDoc::build);
    let refs: Vec<&FileDoc> = docs.iter().collect();
    let mut selection = select::select(&refs, query, cochange, weights);
    selection.truncate(EXPLAINED_FILES);
    let files = selection
        .iter()
        .take(RELEVANT_FILES)
        .filter_map(|r| sources.iter().find(|s| s.path == r.path))
        .map(|s| (s.path.clone(), excerpt(s)))
        .collect();
    let index = SymbolIndex::from_tags(docs.into_iter().map(|d| (d.path, d.tags)));
    PromptContext {
        map: index.repo_map(map_tokens),
        files,
        selection,
    }
}
