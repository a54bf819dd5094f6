//! Context selection: which files of a repository a model should see for a task.
//!
//! Files are ranked by a weighted sum of signals, each scaled to 0..1 over the repository:
//!
//! - `bm25`: BM25 of the task's words over each file's words (identifiers split at `_` and
//!   case changes, lowercased, lightly stemmed) and its path's words;
//! - `path`: the share of the task's words found in the file's path (its name counts double);
//! - `symbols`: the task's words found in the names the file defines;
//! - `mentions`: names and paths the task spells out (`parse_edits`, `vcs/mod.rs`) that the
//!   file defines or is;
//! - `graph`: personalised PageRank over the files' reference graph (a file that uses a name
//!   another defines is linked to it), seeded from the lexical signals above;
//! - `cochange`: how often a file changed together with the best lexical matches, from history
//!   older than the state looked at.
//!
//! Weights come from configuration ([`SelectWeights`]); each ranked file carries its signals, so
//! the choice can be explained.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::engine::Source;
use super::symbols::{Tag, tags_and_spans};

/// The weight of each signal in a file's score.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelectWeights {
    pub bm25: f64,
    pub path: f64,
    pub symbols: f64,
    pub mentions: f64,
    pub graph: f64,
    pub cochange: f64,
}

/// Chosen by `orion eval corpus` on its tuning set (docs/context.md), as in
/// config/default.toml.
impl Default for SelectWeights {
    fn default() -> Self {
        Self {
            bm25: 1.0,
            path: 0.6,
            symbols: 0.7,
            mentions: 0.3,
            graph: 0.2,
            cochange: 0.1,
        }
    }
}

/// Commits between which files changed together are not counted: a sweeping change says
/// nothing about which files belong together.
pub const MAX_COCHANGE_FILES: usize = 30;
/// How many of the best lexical matches seed the co-change and graph signals.
const SEEDS: usize = 10;
const BM25_K1: f64 = 1.2;
const BM25_B: f64 = 0.75;
const PAGERANK_DAMPING: f64 = 0.5;
const PAGERANK_ROUNDS: usize = 20;

/// What selection knows of one file: its words and its tags.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileDoc {
    pub path: String,
    /// Word counts of the content.
    pub terms: HashMap<String, u32>,
    /// Words in the content.
    pub length: u32,
    /// Words of the path, and of the file name alone.
    pub path_terms: Vec<String>,
    pub name_terms: Vec<String>,
    /// Words of the names the file defines (read once, asked for every query).
    pub defined_terms: HashSet<String>,
    pub tags: Vec<Tag>,
    /// Where its functions are (from the same parse as the tags).
    pub functions: Vec<super::file::FunctionSpan>,
}

impl FileDoc {
    /// Reads a file's words and tags (one parse).
    pub fn build(parser: &mut tree_sitter::Parser, source: &Source) -> Self {
        let text = String::from_utf8_lossy(&source.bytes);
        let mut terms = HashMap::new();
        let mut length = 0;
        for word in words(&text) {
            *terms.entry(word).or_insert(0) += 1;
            length += 1;
        }
        let name = source.path.rsplit('/').next().unwrap_or(&source.path);
        let stem = name.split('.').next().unwrap_or(name);
        let (file_tags, functions) =
            tags_and_spans(parser, source.language, &source.path, &source.bytes);
        Self {
            path: source.path.clone(),
            terms,
            length,
            path_terms: words(&source.path).collect(),
            name_terms: words(stem).collect(),
            defined_terms: file_tags
                .iter()
                .filter(|t| t.definition)
                .flat_map(|t| words(&t.name))
                .collect(),
            tags: file_tags,
            functions,
        }
    }
}

/// One function of a file (the analyzer's span), as a document to rank: the words of its
/// lines, and (as its path) the words of its name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionDoc {
    /// `path::name:line`.
    pub id: String,
    /// The file's path, and the function's name.
    pub file: String,
    pub name: String,
    /// First and last line (1-based, inclusive).
    pub start: u32,
    pub end: u32,
    pub doc: FileDoc,
}

impl FunctionDoc {
    /// The functions of a file, each as a document: `file` is its [`FileDoc`] (whose parse
    /// found where they are).
    pub fn of(source: &Source, file: &FileDoc) -> Vec<Self> {
        let spans = &file.functions;
        let text = String::from_utf8_lossy(&source.bytes);
        let lines: Vec<&str> = text.lines().collect();
        spans
            .iter()
            .map(|f| {
                let first = (f.start_line.max(1) as usize - 1).min(lines.len());
                let last = (f.end_line as usize).clamp(first, lines.len());
                let mut terms = HashMap::new();
                let mut length = 0;
                for word in words(&lines[first..last].join("\n")) {
                    *terms.entry(word).or_insert(0) += 1;
                    length += 1;
                }
                let id = format!("{}::{}:{}", source.path, f.name, f.start_line);
                Self {
                    file: source.path.clone(),
                    name: f.name.clone(),
                    start: f.start_line,
                    end: f.end_line,
                    doc: FileDoc {
                        path: id.clone(),
                        terms,
                        length,
                        path_terms: words(&f.name).collect(),
                        ..FileDoc::default()
                    },
                    id,
                }
            })
            .collect()
    }
}

/// Orion's ranking of functions for a query: each function's file score from `selected` (as a
/// share of the best file's) plus the function's own BM25 match to the query, its name
/// counted (as a share of the best function's).
pub fn function_scores(selected: &[Ranked], functions: &[&FunctionDoc], query: &str) -> Vec<f64> {
    let best_file = selected
        .first()
        .map_or(1.0, |r| r.score.max(f64::MIN_POSITIVE));
    let file_score: HashMap<&str, f64> = selected
        .iter()
        .map(|r| (r.path.as_str(), r.score / best_file))
        .collect();
    let terms: Vec<String> = words(query).collect();
    let docs: Vec<&FileDoc> = functions.iter().map(|f| &f.doc).collect();
    let lexical = bm25(&docs, &terms, true);
    let best_lexical = lexical.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
    functions
        .iter()
        .zip(&lexical)
        .map(|(f, lex)| {
            file_score.get(f.file.as_str()).copied().unwrap_or(0.0) + lex / best_lexical
        })
        .collect()
}

/// Files that changed together, counted over commits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoChange {
    /// Commits that changed each file.
    changes: HashMap<String, u32>,
    /// For each file, the files changed in the same commits, and how often.
    together: HashMap<String, HashMap<String, u32>>,
}

impl CoChange {
    /// Counts one commit's files (ignored beyond [`MAX_COCHANGE_FILES`]).
    pub fn add_commit(&mut self, files: &[String]) {
        if files.len() > MAX_COCHANGE_FILES {
            return;
        }
        for a in files {
            *self.changes.entry(a.clone()).or_insert(0) += 1;
            let row = self.together.entry(a.clone()).or_default();
            for b in files.iter().filter(|b| *b != a) {
                *row.entry(b.clone()).or_insert(0) += 1;
            }
        }
    }

    /// The share of `seed`'s commits that also changed each other file.
    fn neighbours(&self, seed: &str) -> impl Iterator<Item = (&String, f64)> {
        let total = f64::from(self.changes.get(seed).copied().unwrap_or(0).max(1));
        self.together
            .get(seed)
            .into_iter()
            .flatten()
            .map(move |(file, n)| (file, f64::from(*n) / total))
    }
}

/// One ranked file, with what each signal gave it (before weighting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ranked {
    pub path: String,
    pub score: f64,
    pub signals: BTreeMap<String, f64>,
}

/// Words of a text: identifiers split at `_`, digits and case changes, lowercased, 3 letters
/// or more, common English and keyword noise left out, lightly stemmed.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .flat_map(split_identifier)
        .filter(|w| w.len() >= 3 && !STOP_WORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
}

fn split_identifier(token: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = token.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let boundary = c.is_ascii_digit()
            || (c.is_uppercase()
                && i > 0
                && (chars[i - 1].is_lowercase()
                    || chars.get(i + 1).is_some_and(|n| n.is_lowercase())
                        && chars[i - 1].is_uppercase()));
        if boundary && !current.is_empty() {
            parts.push(std::mem::take(&mut current));
        }
        if !c.is_ascii_digit() {
            current.extend(c.to_lowercase());
        }
    }
    if !current.is_empty() {
        parts.push(current);
    }
    parts
}

/// A light suffix stemmer: plurals, common verb endings and a final `e`, enough that
/// "parsing", "parsed", "parses" and "parse" meet.
fn stem(word: &str) -> String {
    let mut base = word.to_owned();
    for suffix in ["ies", "ing", "ed", "es", "s"] {
        if let Some(stripped) = word.strip_suffix(suffix)
            && stripped.len() >= 3
            && !(suffix == "s" && stripped.ends_with('s'))
        {
            base = match suffix {
                "ies" => format!("{stripped}y"),
                _ => stripped.to_owned(),
            };
            break;
        }
    }
    if base.len() > 3 && base.ends_with('e') {
        base.pop();
    }
    base
}

const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "with", "that", "this", "from", "into", "when", "not", "are", "was",
    "were", "has", "have", "had", "but", "all", "any", "can", "will", "use", "used", "using",
    "add", "added", "fix", "fixed", "make", "new", "now", "also", "more", "less", "some", "its",
    "self", "def", "fn", "let", "var", "const", "return", "import", "pub", "mut", "impl",
    "function", "class", "struct", "enum", "true", "false", "none", "null", "nil", "void",
    "string", "int", "str", "package", "func", "static", "public", "private", "bump", "update",
    "merge", "pull", "request", "branch", "remove", "support", "allow", "should", "don", "doesn",
    "isn", "than", "then", "there", "where", "which", "what", "who", "how", "only", "like", "via",
];

/// Names and paths the task spells out: identifiers with `_`, a case change, `::` or `.` in
/// them, and anything in backquotes.
fn mentions(query: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    for raw in query.split(|c: char| c.is_whitespace() || "`'\"(),;:[]{}<>".contains(c)) {
        let token = raw.trim_matches(|c: char| !c.is_alphanumeric() && c != '_');
        if token.len() < 3 {
            continue;
        }
        let spelled = token.contains('_')
            || token.contains('.')
            || token.contains('/')
            || token.chars().skip(1).any(char::is_uppercase);
        if spelled {
            found.insert(token.to_owned());
            // `module.function` also mentions `function`.
            if let Some(last) = token.rsplit(['.', '/']).next()
                && last.len() >= 3
            {
                found.insert(last.to_owned());
            }
        }
    }
    found
}

/// Scales scores to 0..1 by their maximum.
fn normalise(scores: &mut [f64]) {
    let max = scores.iter().copied().fold(0.0, f64::max);
    if max > 0.0 {
        for s in scores.iter_mut() {
            *s /= max;
        }
    }
}

/// BM25 of the query's words over each document's words (and path words, where asked).
pub fn bm25(docs: &[&FileDoc], query: &[String], with_paths: bool) -> Vec<f64> {
    let n = docs.len() as f64;
    if docs.is_empty() {
        return Vec::new();
    }
    let average = docs.iter().map(|d| f64::from(d.length)).sum::<f64>() / n;
    let count = |d: &FileDoc, term: &str| {
        let mut tf = f64::from(d.terms.get(term).copied().unwrap_or(0));
        if with_paths {
            tf += 3.0 * d.path_terms.iter().filter(|t| *t == term).count() as f64;
        }
        tf
    };
    // In a fixed order, so that the sums (and ties) are the same on every run.
    let unique: BTreeSet<&String> = query.iter().collect();
    let mut scores = vec![0.0; docs.len()];
    for term in unique {
        let df = docs.iter().filter(|d| count(d, term) > 0.0).count() as f64;
        if df == 0.0 {
            continue;
        }
        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
        for (score, doc) in scores.iter_mut().zip(docs) {
            let tf = count(doc, term);
            if tf > 0.0 {
                let norm = 1.0 - BM25_B + BM25_B * f64::from(doc.length) / average.max(1.0);
                *score += idf * tf * (BM25_K1 + 1.0) / (tf + BM25_K1 * norm);
            }
        }
    }
    scores
}

/// The repository map's order: files by how often the names they define are used from other
/// files (the query plays no part).
pub fn map_rank(docs: &[&FileDoc]) -> Vec<f64> {
    let mut used: HashMap<&str, HashSet<&str>> = HashMap::new();
    for doc in docs {
        for tag in doc.tags.iter().filter(|t| !t.definition) {
            used.entry(tag.name.as_str()).or_default().insert(&doc.path);
        }
    }
    docs.iter()
        .map(|doc| {
            doc.tags
                .iter()
                .filter(|t| t.definition)
                .map(|t| {
                    let from = used.get(t.name.as_str());
                    1.0 + from.map_or(0, |f| f.iter().filter(|p| **p != doc.path).count()) as f64
                })
                .sum()
        })
        .collect()
}

/// The files' reference graph: a file that uses a name another defines is linked to it
/// (undirected, weighted by how many names link the two).
struct Graph {
    /// Ordered, as the names that weigh each edge are: every run sums in the same order.
    edges: Vec<BTreeMap<usize, f64>>,
    out: Vec<f64>,
}

impl Graph {
    fn new(docs: &[&FileDoc]) -> Self {
        let mut definers: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, doc) in docs.iter().enumerate() {
            for tag in doc.tags.iter().filter(|t| t.definition) {
                definers.entry(tag.name.as_str()).or_default().push(i);
            }
        }
        let mut edges: Vec<BTreeMap<usize, f64>> = vec![BTreeMap::new(); docs.len()];
        for (i, doc) in docs.iter().enumerate() {
            let referenced: BTreeSet<&str> = doc
                .tags
                .iter()
                .filter(|t| !t.definition)
                .map(|t| t.name.as_str())
                .collect();
            for name in referenced {
                let Some(targets) = definers.get(name) else {
                    continue;
                };
                // A name defined everywhere (`new`, `run`) links nothing in particular.
                if targets.len() > 5 {
                    continue;
                }
                let w = 1.0 / targets.len() as f64;
                for &j in targets.iter().filter(|&&j| j != i) {
                    *edges[i].entry(j).or_insert(0.0) += w;
                    *edges[j].entry(i).or_insert(0.0) += w;
                }
            }
        }
        let out = edges.iter().map(|e| e.values().sum()).collect();
        Self { edges, out }
    }

    /// Personalised PageRank restarting at `seed`: what the graph adds beyond the seed itself.
    fn rank(&self, seed: &[f64]) -> Vec<f64> {
        let total: f64 = seed.iter().sum();
        if total <= 0.0 {
            return vec![0.0; seed.len()];
        }
        let restart: Vec<f64> = seed.iter().map(|s| s / total).collect();
        let mut rank = restart.clone();
        for _ in 0..PAGERANK_ROUNDS {
            let mut next: Vec<f64> = restart
                .iter()
                .map(|r| (1.0 - PAGERANK_DAMPING) * r)
                .collect();
            for (i, e) in self.edges.iter().enumerate() {
                if self.out[i] == 0.0 {
                    next[i] += PAGERANK_DAMPING * rank[i];
                    continue;
                }
                for (&j, w) in e {
                    next[j] += PAGERANK_DAMPING * rank[i] * w / self.out[i];
                }
            }
            rank = next;
        }
        rank.iter()
            .zip(&restart)
            .map(|(r, s)| (r - (1.0 - PAGERANK_DAMPING) * s).max(0.0))
            .collect()
    }
}

/// What ranking the files for one query needs that no weight changes: the lexical signals,
/// each scaled to 0..1 over the repository, and (built when first asked) the reference graph.
/// One `Signals` ranks for any number of weight settings: the evaluation's search tries many
/// on the same commit.
pub struct Signals<'a> {
    docs: &'a [&'a FileDoc],
    cochange: Option<&'a CoChange>,
    bm25: Vec<f64>,
    path: Vec<f64>,
    symbols: Vec<f64>,
    mentioned: Vec<f64>,
    graph: std::cell::OnceCell<Graph>,
}

impl<'a> Signals<'a> {
    /// Reads the query's lexical signals over `docs`; `cochange` is the history older than
    /// the state, where there is one.
    pub fn new(docs: &'a [&'a FileDoc], query: &str, cochange: Option<&'a CoChange>) -> Self {
        let terms: Vec<String> = words(query).collect();
        let unique_terms: HashSet<&String> = terms.iter().collect();
        let mut lexical_bm25 = bm25(docs, &terms, true);
        normalise(&mut lexical_bm25);

        let mut path: Vec<f64> = docs
            .iter()
            .map(|d| {
                let hits = unique_terms
                    .iter()
                    .filter(|t| d.path_terms.contains(t))
                    .count()
                    + unique_terms
                        .iter()
                        .filter(|t| d.name_terms.contains(t))
                        .count();
                hits as f64 / unique_terms.len().max(1) as f64
            })
            .collect();
        normalise(&mut path);

        let mut symbols: Vec<f64> = docs
            .iter()
            .map(|d| {
                unique_terms
                    .iter()
                    .filter(|t| d.defined_terms.contains(t.as_str()))
                    .count() as f64
            })
            .collect();
        normalise(&mut symbols);

        let spelled = mentions(query);
        let mut mentioned: Vec<f64> = docs
            .iter()
            .map(|d| {
                let by_path = spelled.iter().any(|m| {
                    d.path == *m
                        || d.path.ends_with(&format!("/{m}"))
                        || m.ends_with(&format!("/{}", d.path))
                });
                let by_name = d
                    .tags
                    .iter()
                    .filter(|t| t.definition && spelled.contains(&t.name))
                    .count();
                (if by_path { 2.0 } else { 0.0 }) + by_name as f64
            })
            .collect();
        normalise(&mut mentioned);
        Self {
            docs,
            cochange,
            bm25: lexical_bm25,
            path,
            symbols,
            mentioned,
            graph: std::cell::OnceCell::new(),
        }
    }

    /// The files ranked by `weights`, best first (files with no signal at all are left out).
    pub fn rank(&self, weights: &SelectWeights) -> Vec<Ranked> {
        let docs = self.docs;
        let lexical: Vec<f64> = (0..docs.len())
            .map(|i| {
                weights.bm25 * self.bm25[i]
                    + weights.path * self.path[i]
                    + weights.symbols * self.symbols[i]
                    + weights.mentions * self.mentioned[i]
            })
            .collect();
        let mut order: Vec<usize> = (0..docs.len()).filter(|&i| lexical[i] > 0.0).collect();
        order.sort_by(|&a, &b| lexical[b].total_cmp(&lexical[a]));
        order.truncate(SEEDS);
        let mut seed = vec![0.0; docs.len()];
        for &i in &order {
            seed[i] = lexical[i];
        }

        let mut graph = if weights.graph > 0.0 {
            self.graph.get_or_init(|| Graph::new(docs)).rank(&seed)
        } else {
            vec![0.0; docs.len()]
        };
        normalise(&mut graph);

        let mut together = vec![0.0; docs.len()];
        if let Some(history) = self.cochange.filter(|_| weights.cochange > 0.0) {
            let index: HashMap<&str, usize> = docs
                .iter()
                .enumerate()
                .map(|(i, d)| (d.path.as_str(), i))
                .collect();
            for &s in &order {
                for (file, share) in history.neighbours(&docs[s].path) {
                    if let Some(&j) = index.get(file.as_str()) {
                        together[j] += seed[s] * share;
                    }
                }
            }
        }
        normalise(&mut together);

        let mut ranked: Vec<Ranked> = (0..docs.len())
            .filter_map(|i| {
                let signals = [
                    ("bm25", self.bm25[i]),
                    ("path", self.path[i]),
                    ("symbols", self.symbols[i]),
                    ("mentions", self.mentioned[i]),
                    ("graph", graph[i]),
                    ("cochange", together[i]),
                ];
                let score = lexical[i] + weights.graph * graph[i] + weights.cochange * together[i];
                (score > 0.0).then(|| Ranked {
                    path: docs[i].path.clone(),
                    score,
                    signals: signals
                        .iter()
                        .filter(|(_, v)| *v > 0.0)
                        .map(|(k, v)| ((*k).to_owned(), (v * 1000.0).round() / 1000.0))
                        .collect(),
                })
            })
            .collect();
        ranked.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then_with(|| a.path.cmp(&b.path))
        });
        ranked
    }
}

/// Ranks `docs` for `query`, best first (files with no signal at all are left out).
pub fn select(
    docs: &[&FileDoc],
    query: &str,
    cochange: Option<&CoChange>,
    weights: &SelectWeights,
) -> Vec<Ranked> {
    Signals::new(docs, query, cochange).rank(weights)
}

/// Indices of `scores` from best to worst (ties by position), for the baselines.
pub fn order_by(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] > 0.0).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    order
}
