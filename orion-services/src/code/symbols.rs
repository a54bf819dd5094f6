//! Navigation: symbol definitions and references from each grammar's tags query, "go to
//! definition" across a repository, a file's outline, and a ranked repository map that fits
//! a token budget (for model prompts).

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tree_sitter::{Parser, Query, QueryCursor, StreamingIterator};

use super::engine::Source;
use super::language::{Language, node_text};

/// One definition or reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
    /// What the tags query calls it: `function`, `method`, `class`, `interface`, `call`, …
    pub kind: String,
    pub definition: bool,
    pub path: String,
    /// 1-based line of the name.
    pub line: u32,
}

/// The compiled tags query of each language, built once (`None` where a query does not
/// compile against its grammar).
fn queries() -> &'static Vec<Option<Query>> {
    static QUERIES: OnceLock<Vec<Option<Query>>> = OnceLock::new();
    QUERIES.get_or_init(|| {
        Language::ALL
            .iter()
            .map(|l| match l {
                // The TypeScript query covers what TypeScript adds; JavaScript's covers the rest.
                Language::TypeScript | Language::Tsx => {
                    let combined =
                        format!("{}\n{}", tree_sitter_javascript::TAGS_QUERY, l.tags_query());
                    Query::new(&l.grammar(), &combined)
                        .or_else(|_| Query::new(&l.grammar(), l.tags_query()))
                        .ok()
                }
                _ => Query::new(&l.grammar(), l.tags_query()).ok(),
            })
            .collect()
    })
}

/// The tags of one file.
pub fn tags(parser: &mut Parser, language: Language, path: &str, source: &[u8]) -> Vec<Tag> {
    match parse(parser, language, source) {
        Some(tree) => tags_in(&tree, language, path, source),
        None => Vec::new(),
    }
}

/// [`tags`] and the file's functions ([`super::file::function_spans`]) from one parse.
pub fn tags_and_spans(
    parser: &mut Parser,
    language: Language,
    path: &str,
    source: &[u8],
) -> (Vec<Tag>, Vec<super::file::FunctionSpan>) {
    match parse(parser, language, source) {
        Some(tree) => (
            tags_in(&tree, language, path, source),
            super::file::function_spans(&tree, language, source),
        ),
        None => (Vec::new(), Vec::new()),
    }
}

fn parse(parser: &mut Parser, language: Language, source: &[u8]) -> Option<tree_sitter::Tree> {
    parser.set_language(&language.grammar()).ok()?;
    parser.parse(source, None)
}

/// The tags of a parsed file.
fn tags_in(tree: &tree_sitter::Tree, language: Language, path: &str, source: &[u8]) -> Vec<Tag> {
    let index = Language::ALL
        .iter()
        .position(|l| *l == language)
        .unwrap_or(0);
    let Some(query) = queries()[index].as_ref() else {
        return Vec::new();
    };
    let names = query.capture_names();
    let mut cursor = QueryCursor::new();
    let mut matches = cursor.matches(query, tree.root_node(), source);
    let mut tags = Vec::new();
    while let Some(m) = matches.next() {
        let mut name = None;
        let mut role = None;
        for capture in m.captures() {
            let capture_name = names[capture.index as usize];
            if capture_name == "name" {
                name = Some(capture.node);
            } else if let Some(kind) = capture_name.strip_prefix("definition.") {
                role = Some((kind, true));
            } else if let Some(kind) = capture_name.strip_prefix("reference.") {
                role = Some((kind, false));
            }
        }
        if let (Some(node), Some((kind, definition))) = (name, role) {
            tags.push(Tag {
                name: node_text(node, source).to_owned(),
                kind: kind.to_owned(),
                definition,
                path: path.to_owned(),
                line: node.start_position().row as u32 + 1,
            });
        }
    }
    // Some queries tag one definition twice (a Rust method is a `function` and a `method`).
    tags.sort_by(|a, b| {
        (a.line, !a.definition, &a.name, &a.kind).cmp(&(b.line, !b.definition, &b.name, &b.kind))
    });
    tags.dedup_by(|a, b| a.line == b.line && a.definition == b.definition && a.name == b.name);
    tags
}

/// A file's rank, its path, and its definitions with their weights.
type RankedFile<'a> = (usize, &'a String, Vec<(usize, &'a Tag)>);

/// A repository's definitions and references.
#[derive(Clone, Debug, Default)]
pub struct SymbolIndex {
    /// Every tag, by file, in line order.
    pub by_file: BTreeMap<String, Vec<Tag>>,
    definitions: HashMap<String, Vec<(String, u32, String)>>,
    /// References per name, counting only references from files other than the definition's.
    references: HashMap<String, Vec<String>>,
}

/// Where a name is defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub path: String,
    pub line: u32,
    pub kind: String,
}

/// A repository map: the most referenced definitions, grouped by file, within a budget.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoMap {
    pub text: String,
    /// Estimated tokens of `text` (4 characters a token).
    pub tokens: usize,
    pub files: usize,
    pub definitions: usize,
}

impl SymbolIndex {
    /// Tags every source, in parallel.
    pub fn build(sources: &[Source], threads: usize) -> Self {
        let per_file = super::engine::parallel(sources, threads, |parser, s| {
            tags(parser, s.language, &s.path, &s.bytes)
        });
        Self::from_tags(sources.iter().map(|s| s.path.clone()).zip(per_file))
    }

    /// The index of files already tagged: (path, its tags).
    pub fn from_tags(files: impl IntoIterator<Item = (String, Vec<Tag>)>) -> Self {
        let mut index = SymbolIndex::default();
        for (path, file_tags) in files {
            for t in &file_tags {
                if t.definition {
                    index.definitions.entry(t.name.clone()).or_default().push((
                        t.path.clone(),
                        t.line,
                        t.kind.clone(),
                    ));
                } else {
                    index
                        .references
                        .entry(t.name.clone())
                        .or_default()
                        .push(t.path.clone());
                }
            }
            index.by_file.insert(path, file_tags);
        }
        index
    }

    /// Go to definition: every place `name` is defined.
    pub fn definition(&self, name: &str) -> Vec<Location> {
        let mut found: Vec<Location> = self
            .definitions
            .get(name)
            .into_iter()
            .flatten()
            .map(|(path, line, kind)| Location {
                path: path.clone(),
                line: *line,
                kind: kind.clone(),
            })
            .collect();
        found.sort_by(|a, b| (a.path.as_str(), a.line).cmp(&(b.path.as_str(), b.line)));
        found
    }

    /// A file's definitions, in line order.
    pub fn outline(&self, path: &str) -> Vec<Tag> {
        self.by_file
            .get(path)
            .into_iter()
            .flatten()
            .filter(|t| t.definition)
            .cloned()
            .collect()
    }

    /// How often a definition's name is referenced from other files.
    fn weight(&self, tag: &Tag) -> usize {
        self.references
            .get(&tag.name)
            .map_or(0, |from| from.iter().filter(|p| **p != tag.path).count())
    }

    /// The files with the most referenced definitions first, each with its definitions by
    /// weight, cut to `budget_tokens`.
    pub fn repo_map(&self, budget_tokens: usize) -> RepoMap {
        let mut files: Vec<RankedFile<'_>> = self
            .by_file
            .iter()
            .map(|(path, tags)| {
                let mut defs: Vec<(usize, &Tag)> = tags
                    .iter()
                    .filter(|t| t.definition)
                    .map(|t| (self.weight(t), t))
                    .collect();
                defs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.line.cmp(&b.1.line)));
                (defs.iter().map(|(w, _)| w + 1).sum(), path, defs)
            })
            .filter(|(_, _, defs)| !defs.is_empty())
            .collect();
        files.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let budget_chars = budget_tokens.saturating_mul(4);
        let mut text = String::new();
        let (mut file_count, mut definition_count) = (0, 0);
        'files: for (_, path, defs) in files {
            let mut block = format!("{path}:\n");
            let mut in_block = 0;
            for (weight, tag) in defs {
                let line = format!(
                    "  {} {} (line {}, {} refs)\n",
                    tag.kind, tag.name, tag.line, weight
                );
                if text.len() + block.len() + line.len() > budget_chars {
                    if in_block > 0 {
                        text.push_str(&block);
                        file_count += 1;
                        definition_count += in_block;
                    }
                    break 'files;
                }
                block.push_str(&line);
                in_block += 1;
            }
            text.push_str(&block);
            file_count += 1;
            definition_count += in_block;
        }
        RepoMap {
            tokens: text.len().div_ceil(4),
            text,
            files: file_count,
            definitions: definition_count,
        }
    }
}
