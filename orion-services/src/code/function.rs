//! Per-function metrics: parameters, cyclomatic and cognitive complexity, nesting depth.

use serde::{Deserialize, Serialize};
use tree_sitter::Node;

use super::language::{Cognitive, Language, class_of, node_text};

/// Measures of one function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionMetrics {
    pub name: String,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub parameters: u32,
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub max_nesting: u32,
}

/// Sees every node of a function's body that is not the function's own business (comments,
/// types, imports) and every nested function, so one walk serves the file and the function.
pub trait Observer<'t> {
    fn other(&mut self, node: Node<'t>);
    fn nested_function(&mut self, node: Node<'t>);
}

/// Measures the function at `node` (a node for which `language.is_function` holds).
pub fn measure<'t>(
    language: Language,
    node: Node<'t>,
    source: &[u8],
    observer: &mut impl Observer<'t>,
) -> FunctionMetrics {
    let mut walker = Walker {
        language,
        classes: language.classes(),
        source,
        cyclomatic: 1,
        cognitive: 0,
        max_nesting: 0,
        observer,
    };
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        walker.visit(child, 0, 0);
    }
    FunctionMetrics {
        // A name is source text, which may hold a NUL that no database text takes.
        name: function_name(node, source).replace('\0', "\u{FFFD}"),
        start_line: node.start_position().row as u32 + 1,
        end_line: node.end_position().row as u32 + 1,
        parameters: parameters(language, node),
        cyclomatic: walker.cyclomatic,
        cognitive: walker.cognitive,
        max_nesting: walker.max_nesting,
    }
}

struct Walker<'s, 'o, O> {
    language: Language,
    classes: &'static [super::language::KindClass],
    source: &'s [u8],
    cyclomatic: u32,
    cognitive: u32,
    max_nesting: u32,
    observer: &'o mut O,
}

impl<'t, O: Observer<'t>> Walker<'_, '_, O> {
    /// `nesting` is the cognitive nesting level; `depth` the structural nesting depth.
    fn visit(&mut self, node: Node<'t>, nesting: u32, depth: u32) {
        let class = class_of(self.classes, node);
        if class.function {
            // Measured as a function of its own.
            self.observer.nested_function(node);
            return;
        }
        self.observer.other(node);
        let (mut inner_nesting, mut inner_depth) = (nesting, depth);
        if class.inline_function {
            inner_nesting += 1;
            inner_depth += 1;
        } else {
            let role = self.language.role(node, self.source);
            self.cyclomatic += role.cyclomatic;
            let is_if = class.is_if;
            let else_if = is_if && is_else_if(self.language, node);
            self.cognitive += match (else_if, role.cognitive) {
                (true, _) => 1,
                (false, Cognitive::Structural) => 1 + nesting,
                (false, Cognitive::Hybrid | Cognitive::Logical) => 1,
                (false, Cognitive::None) => 0,
            };
            if is_if {
                self.cognitive += plain_else(self.language, node);
            }
            if role.nests && !else_if {
                inner_nesting += 1;
                if !class.is_catch {
                    inner_depth += 1;
                }
            } else if class.is_try {
                inner_depth += 1;
            }
        }
        self.max_nesting = self.max_nesting.max(inner_depth);
        let mut cursor = node.walk();
        for child in node.children(&mut cursor) {
            self.visit(child, inner_nesting, inner_depth);
        }
    }
}

/// An `if` that is the `else` branch of another `if`.
fn is_else_if(language: Language, node: Node<'_>) -> bool {
    let Some(parent) = node.parent() else {
        return false;
    };
    if parent.kind() == "else_clause" {
        return parent.parent().is_some_and(|g| language.is_if(g.kind()));
    }
    language.is_if(parent.kind())
        && parent
            .child_by_field_name("alternative")
            .is_some_and(|alt| alt.id() == node.id())
}

/// +1 for an `if`'s final `else` that is not an `else if`.
fn plain_else(language: Language, node: Node<'_>) -> u32 {
    let mut cursor = node.walk();
    let mut count = 0;
    for alternative in node.children_by_field_name("alternative", &mut cursor) {
        let is_plain = match alternative.kind() {
            "elif_clause" => false,
            "else_clause" => {
                let mut inner = alternative.walk();
                !alternative
                    .named_children(&mut inner)
                    .any(|c| language.is_if(c.kind()))
            }
            other => !language.is_if(other),
        };
        count += u32::from(is_plain);
    }
    count
}

pub(super) fn function_name(node: Node<'_>, source: &[u8]) -> String {
    if let Some(name) = node.child_by_field_name("name") {
        return node_text(name, source).to_owned();
    }
    // Anonymous functions take the name they are bound to, where there is one.
    let bound = node.parent().and_then(|p| match p.kind() {
        "variable_declarator" => p.child_by_field_name("name"),
        "pair" => p.child_by_field_name("key"),
        "assignment_expression" => p.child_by_field_name("left"),
        "public_field_definition" | "field_definition" => p
            .child_by_field_name("property")
            .or_else(|| p.child_by_field_name("name")),
        _ => None,
    });
    bound.map_or_else(
        || "<anonymous>".to_owned(),
        |n| node_text(n, source).to_owned(),
    )
}

fn parameters(language: Language, node: Node<'_>) -> u32 {
    let Some(list) = node.child_by_field_name("parameters") else {
        // A JavaScript arrow function with one bare parameter: `x => x`.
        return u32::from(node.child_by_field_name("parameter").is_some());
    };
    let mut cursor = list.walk();
    list.named_children(&mut cursor)
        .map(|p| match (language, p.kind()) {
            (_, "comment" | "line_comment" | "block_comment" | "attribute_item") => 0,
            (Language::Python, "keyword_separator" | "positional_separator") => 0,
            // Go declares several names with one type: `a, b int`.
            (Language::Go, "parameter_declaration" | "variadic_parameter_declaration") => {
                let mut c = p.walk();
                p.children_by_field_name("name", &mut c).count().max(1) as u32
            }
            _ => 1,
        })
        .sum()
}
