//! One file, one pass: lines, functions, types, imports, TODOs, syntax errors.

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser};

use super::function::{self, FunctionMetrics};
use super::language::{Language, node_text};
use super::lines;

/// Everything measured in one source file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAnalysis {
    /// Relative to the analysed root, with `/` separators.
    pub path: String,
    pub language: Language,
    pub lines: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
    pub functions: Vec<FunctionMetrics>,
    /// Classes, structs, interfaces, enums, traits, named types.
    pub types: u32,
    /// The import statements, as written (whitespace collapsed).
    pub imports: Vec<String>,
    /// Comments mentioning TODO, FIXME, HACK or XXX.
    pub todos: u32,
    /// The parser met syntax errors; the measures cover what parsed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syntax_errors: bool,
}

const TODO_MARKERS: [&str; 4] = ["TODO", "FIXME", "HACK", "XXX"];

/// Parses and measures one file. `parser` is reused between files of one thread.
pub fn analyze(
    parser: &mut Parser,
    path: String,
    language: Language,
    source: &[u8],
) -> FileAnalysis {
    let mut comments = Vec::new();
    let mut functions = Vec::new();
    let mut types = 0;
    let mut imports = Vec::new();
    let mut todos = 0;
    let mut syntax_errors = true;
    if parser.set_language(&language.grammar()).is_ok()
        && let Some(tree) = parser.parse(source, None)
    {
        let root = tree.root_node();
        syntax_errors = root.has_error();
        visit(root, &mut |node| {
            if !node.is_named() {
                return; // keywords share kind names with nodes (`class`)
            }
            let kind = node.kind();
            if language.is_comment(kind) {
                comments.push(node.byte_range());
                let text = node_text(node, source);
                todos += u32::from(TODO_MARKERS.iter().any(|m| text.contains(m)));
            } else if language.is_function(kind) {
                functions.push(function::measure(language, node, source));
            } else if language.is_type(kind) {
                types += 1;
            } else if language.is_import(kind)
                && !(kind == "mod_item" && node.child_by_field_name("body").is_some())
            {
                imports.push(
                    node_text(node, source)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
            }
        });
    }
    let counts = lines::count(source, &comments);
    FileAnalysis {
        path,
        language,
        lines: counts.total,
        code: counts.code,
        comment: counts.comment,
        blank: counts.blank,
        functions,
        types,
        imports,
        todos,
        syntax_errors,
    }
}

/// Pre-order walk of every node, with a cursor (no recursion, so deep trees are safe).
pub fn visit(root: Node<'_>, f: &mut impl FnMut(Node<'_>)) {
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
