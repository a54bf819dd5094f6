//! What a model is shown of a repository for a task: the repository map, the files that
//! context selection ranks first ([`super::select`]), and the functions it ranks first of what
//! those files do not already show (functions of the next-ranked files, or past a shown
//! file's cut), from one reading and one parse of the repository (the functions' spans come
//! from the tree the tags are read from).

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::engine::{Source, parallel};
use super::select::{self, CoChange, FileDoc, FunctionDoc, Ranked, SelectWeights};
use super::symbols::{RepoMap, SymbolIndex};

/// How many files are shown whole, and how much of each.
pub const RELEVANT_FILES: usize = 3;
pub const RELEVANT_FILE_BYTES: usize = 8 * 1024;
/// How many ranked files a context keeps, to explain the choice (their functions are the ones
/// excerpts are chosen from).
pub const EXPLAINED_FILES: usize = 10;
/// The excerpts' share of the prompt, and how many at most.
pub const EXCERPT_BYTES: usize = 6 * 1024;
pub const EXCERPTS: usize = 8;

/// What ends a shown file's text where it was cut.
pub const CUT_MARK: &str = "\n… (cut)\n";

/// A function shown on its own: where it is and its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Excerpt {
    pub path: String,
    pub name: String,
    /// First and last line (1-based, inclusive) in the file as it is.
    pub start: u32,
    pub end: u32,
    pub text: String,
}

/// The repository as a prompt sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptContext {
    pub map: RepoMap,
    /// (path, text) of the files shown, each cut to [`RELEVANT_FILE_BYTES`].
    pub files: Vec<(String, String)>,
    /// The best-ranked files with their signals (the first [`RELEVANT_FILES`] are shown).
    pub selection: Vec<Ranked>,
    /// Functions of the selection not in what `files` shows, best first, within
    /// [`EXCERPT_BYTES`].
    #[serde(default)]
    pub excerpts: Vec<Excerpt>,
    /// The files of `files` shown whole: not cut to size, and text as they are (valid
    /// UTF-8).
    #[serde(default)]
    pub whole: Vec<String>,
}

impl PromptContext {
    /// The files the prompt shows only part of: those of `files` not shown whole, and those
    /// it shows only functions of. A whole-file edit of one would replace what the model did
    /// not see.
    pub fn seen_in_part(&self) -> Vec<String> {
        let mut partial: Vec<String> = Vec::new();
        let paths = self
            .files
            .iter()
            .map(|(p, _)| p)
            .chain(self.excerpts.iter().map(|e| &e.path));
        for path in paths {
            if !self.whole.contains(path) && !partial.contains(path) {
                partial.push(path.clone());
            }
        }
        partial
    }
}

/// A file's text for a prompt, cut to [`RELEVANT_FILE_BYTES`], and how many of its lines are
/// shown whole.
fn excerpt(source: &Source) -> (String, usize) {
    let mut text = String::from_utf8_lossy(&source.bytes).into_owned();
    if text.len() > RELEVANT_FILE_BYTES {
        let mut cut = RELEVANT_FILE_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        let whole = text.matches('\n').count();
        text.push_str(CUT_MARK);
        return (text, whole);
    }
    (text, usize::MAX)
}

/// The map within `map_tokens`, the selected files and the function excerpts, from sources
/// read once and parsed once; `cochange` is the repository's history, where it has one.
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
    // Each selected file with its document (sources and docs are in the same order).
    let selected: Vec<(&Source, &FileDoc)> = selection
        .iter()
        .filter_map(|r| {
            let i = sources.iter().position(|s| s.path == r.path)?;
            Some((&sources[i], &docs[i]))
        })
        .collect();
    let mut files = Vec::new();
    let mut whole = Vec::new();
    // How many lines of each shown file the prompt holds whole.
    let mut visible: HashMap<&str, usize> = HashMap::new();
    for (source, _) in selected.iter().take(RELEVANT_FILES) {
        let (text, lines) = excerpt(source);
        visible.insert(&source.path, lines);
        if lines == usize::MAX && std::str::from_utf8(&source.bytes).is_ok() {
            whole.push(source.path.clone());
        }
        files.push((source.path.clone(), text));
    }
    let excerpts = excerpts(&selected, &selection, &visible, query);
    let index = SymbolIndex::from_tags(docs.into_iter().map(|d| (d.path, d.tags)));
    PromptContext {
        map: index.repo_map(map_tokens),
        files,
        selection,
        excerpts,
        whole,
    }
}

/// The functions of the selected files that the prompt does not already show, ranked as the
/// evaluation ranks them ([`select::function_scores`]); each must share a word with the task,
/// and they are taken best first while they fit [`EXCERPT_BYTES`] (none overlapping another).
fn excerpts(
    selected: &[(&Source, &FileDoc)],
    selection: &[Ranked],
    visible: &HashMap<&str, usize>,
    query: &str,
) -> Vec<Excerpt> {
    // A file shown whole and uncut shows every function of it: only the others' functions
    // are candidates (found by the parse that read the file's tags).
    let functions: Vec<FunctionDoc> = selected
        .iter()
        .filter(|(s, _)| visible.get(s.path.as_str()) != Some(&usize::MAX))
        .flat_map(|(s, doc)| FunctionDoc::of(s, doc))
        .collect();
    let refs: Vec<&FunctionDoc> = functions.iter().collect();
    let scores = select::function_scores(selection, &refs, query);
    let terms: HashSet<String> = select::words(query).collect();
    let mut chosen: Vec<Excerpt> = Vec::new();
    let mut bytes = 0;
    for i in select::order_by(&scores) {
        let f = refs[i];
        let shown_whole = visible
            .get(f.file.as_str())
            .is_some_and(|lines| f.end as usize <= *lines);
        let on_task = f
            .doc
            .terms
            .keys()
            .chain(&f.doc.path_terms)
            .any(|w| terms.contains(w));
        let overlaps = chosen
            .iter()
            .any(|c| c.path == f.file && c.start <= f.end && f.start <= c.end);
        if shown_whole || !on_task || overlaps {
            continue;
        }
        let Some((source, _)) = selected.iter().find(|(s, _)| s.path == f.file) else {
            continue;
        };
        let text: String = String::from_utf8_lossy(&source.bytes)
            .lines()
            .skip(f.start.max(1) as usize - 1)
            .take((f.end + 1).saturating_sub(f.start.max(1)) as usize)
            .flat_map(|l| [l, "\n"])
            .collect();
        if bytes + text.len() > EXCERPT_BYTES {
            continue;
        }
        bytes += text.len();
        chosen.push(Excerpt {
            path: f.file.clone(),
            name: f.name.clone(),
            start: f.start,
            end: f.end,
            text,
        });
        if chosen.len() == EXCERPTS {
            break;
        }
    }
    chosen
}
