//! One file, one pass: lines, functions, types, imports, TODOs, syntax errors.

use serde::{Deserialize, Serialize};
use tree_sitter::{Node, Parser};

use super::function::{self, FunctionMetrics, Observer};
use super::language::{Language, class_of, node_text};
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

/// What the file-level pass collects besides functions.
struct Collector<'t, 's> {
    classes: &'static [super::language::KindClass],
    source: &'s [u8],
    comments: Vec<std::ops::Range<usize>>,
    types: u32,
    imports: Vec<String>,
    todos: u32,
    pending: Vec<Node<'t>>,
}

impl<'t> Observer<'t> for Collector<'t, '_> {
    fn other(&mut self, node: Node<'t>) {
        let class = class_of(self.classes, node);
        if class.comment {
            self.comments.push(node.byte_range());
            let text = node_text(node, self.source);
            self.todos += u32::from(TODO_MARKERS.iter().any(|m| text.contains(m)));
        } else if class.is_type {
            self.types += 1;
        } else if class.import
            && !(node.kind() == "mod_item" && node.child_by_field_name("body").is_some())
        {
            self.imports.push(
                node_text(node, self.source)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }

    fn nested_function(&mut self, node: Node<'t>) {
        self.pending.push(node);
    }
}

/// Parses and measures one file in one walk of its tree: outside functions the file-level
/// pass looks at each node; inside, the function's walker does and reports back.
pub fn analyze(
    parser: &mut Parser,
    path: String,
    language: Language,
    source: &[u8],
) -> FileAnalysis {
    let mut functions = Vec::new();
    let mut syntax_errors = true;
    let tree = parser
        .set_language(&language.grammar())
        .ok()
        .and_then(|()| parser.parse(source, None));
    let classes = language.classes();
    let mut collector = Collector {
        classes,
        source,
        comments: Vec::new(),
        types: 0,
        imports: Vec::new(),
        todos: 0,
        pending: Vec::new(),
    };
    if let Some(tree) = &tree {
        let root = tree.root_node();
        syntax_errors = root.has_error();
        visit(root, &mut |node| {
            if class_of(classes, node).function {
                collector.pending.push(node);
                false
            } else {
                collector.other(node);
                true
            }
        });
        while let Some(node) = collector.pending.pop() {
            let metrics = function::measure(language, node, source, &mut collector);
            functions.push((node.start_byte(), metrics));
        }
    }
    functions.sort_by_key(|(start, _)| *start);
    collector.comments.sort_by_key(|r| r.start);
    let counts = lines::count(source, &collector.comments);
    FileAnalysis {
        path,
        language,
        lines: counts.total,
        code: counts.code,
        comment: counts.comment,
        blank: counts.blank,
        functions: functions.into_iter().map(|(_, m)| m).collect(),
        types: collector.types,
        imports: collector.imports,
        todos: collector.todos,
        syntax_errors,
    }
}

/// One function of a file, where it is: as [`analyze`] finds it, without its metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSpan {
    pub name: String,
    /// First and last line, 1-based.
    pub start_line: u32,
    pub end_line: u32,
}

/// The functions [`analyze`] measures (nested ones too, in the order of their starts), read
/// from a parsed tree by a walk: for what needs only where they are (context selection).
pub fn function_spans(
    tree: &tree_sitter::Tree,
    language: Language,
    source: &[u8],
) -> Vec<FunctionSpan> {
    let classes = language.classes();
    let mut spans = Vec::new();
    visit(tree.root_node(), &mut |node| {
        if class_of(classes, node).function {
            spans.push((
                node.start_byte(),
                FunctionSpan {
                    // As `function::measure` names it.
                    name: function::function_name(node, source).replace('\0', "\u{FFFD}"),
                    start_line: node.start_position().row as u32 + 1,
                    end_line: node.end_position().row as u32 + 1,
                },
            ));
        }
        true
    });
    spans.sort_by_key(|(start, _)| *start);
    spans.into_iter().map(|(_, span)| span).collect()
}

/// Pre-order walk with a cursor (no recursion, so deep trees are safe); `f` returns whether
/// to descend into the node.
pub fn visit<'t>(root: Node<'t>, f: &mut impl FnMut(Node<'t>) -> bool) {
    let mut cursor = root.walk();
    loop {
        if f(cursor.node()) && cursor.goto_first_child() {
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
