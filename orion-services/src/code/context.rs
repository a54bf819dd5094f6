//! What a model is shown of a repository for a task: the repository map and the files that
//! mention the task's words most, from one reading of the repository.

use serde::{Deserialize, Serialize};

use super::engine::Source;
use super::symbols::{RepoMap, SymbolIndex};

/// How many files are shown whole, and how much of each.
pub const RELEVANT_FILES: usize = 3;
pub const RELEVANT_FILE_BYTES: usize = 8 * 1024;

/// The repository as a prompt sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptContext {
    pub map: RepoMap,
    /// (path, text) of the most relevant files, each cut to [`RELEVANT_FILE_BYTES`].
    pub files: Vec<(String, String)>,
}

/// The files whose path or content mention the most words (3 letters or more) of `query`.
pub fn relevant_files(sources: &[Source], query: &str) -> Vec<(String, String)> {
    let words: Vec<String> = query
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| w.len() >= 3)
        .map(str::to_lowercase)
        .collect();
    let mut scored: Vec<(usize, &Source)> = sources
        .iter()
        .filter_map(|s| {
            let text = String::from_utf8_lossy(&s.bytes);
            let haystack = format!("{} {}", s.path.to_lowercase(), text.to_lowercase());
            let score = words
                .iter()
                .filter(|w| haystack.contains(w.as_str()))
                .count();
            (score > 0).then_some((score, s))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
    scored
        .into_iter()
        .take(RELEVANT_FILES)
        .map(|(_, s)| {
            let mut text = String::from_utf8_lossy(&s.bytes).into_owned();
            if text.len() > RELEVANT_FILE_BYTES {
                let mut cut = RELEVANT_FILE_BYTES;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                text.push_str("\n… (cut)\n");
            }
            (s.path.clone(), text)
        })
        .collect()
}

/// The map within `map_tokens` and the relevant files, from sources read once.
pub fn prompt_context(
    sources: &[Source],
    query: &str,
    map_tokens: usize,
    threads: usize,
) -> PromptContext {
    PromptContext {
        map: SymbolIndex::build(sources, threads).repo_map(map_tokens),
        files: relevant_files(sources, query),
    }
}
