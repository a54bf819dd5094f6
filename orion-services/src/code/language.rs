//! The languages Orion parses, and what their syntax trees mean to the metrics.
//!
//! Everything language-specific is in this file: which node kinds are comments, functions,
//! types and imports, and how each construct counts toward complexity. The counting rules:
//!
//! **Cyclomatic complexity (McCabe)** is 1 + the decision points in a function's own body,
//! counted the way lizard counts them, token for token:
//! - Python: `if`, `elif`, `for`, `while`, `except`, `finally`, `and`, `or` — including the
//!   `if` of a conditional expression and the `for`/`if` of comprehensions (lizard counts the
//!   keywords wherever they occur); `case` of `match` is not counted (lizard does not).
//! - JavaScript / TypeScript: `if`, `for`, `for…in/of`, `while`, `do…while`, `catch`, `case`
//!   (not `default`), `?:`, `&&`, `||`, `??`.
//! - Go: `if`, `for`, `case` of expression, type and select switches (not `default`), `&&`, `||`.
//! - Java: `if`, `for`, enhanced `for`, `while`, `do…while`, `catch`, `case` (not `default`),
//!   `?:`, `&&`, `||`.
//! - Rust (as rust-code-analysis counts it): `if` (and `if let`), `while`, `for`, `loop`, each
//!   `match` arm, `&&`, `||`, and the `?` operator.
//!
//! Nested named functions are functions of their own and do not add to the enclosing one;
//! closures and lambdas (Rust closures, Python `lambda`, Java lambdas) belong to the function
//! that contains them. JavaScript arrow functions and function expressions are functions of
//! their own, as lizard treats them.
//!
//! **Cognitive complexity** follows SonarSource's specification: +1 for each `if`, loop,
//! `switch`/`match`, `catch` and ternary, plus the current nesting level; +1 without nesting
//! for `else if`/`elif` and `else`; +1 for each sequence of like boolean operators; closures
//! and lambdas raise the nesting level. **Nesting depth** is the deepest stack of those
//! nesting structures (and `try`) in a function.

use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use tree_sitter::{Language as Grammar, Node};

/// A language Orion can parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Java,
}

impl Language {
    pub const ALL: [Language; 7] = [
        Language::Rust,
        Language::Python,
        Language::JavaScript,
        Language::TypeScript,
        Language::Tsx,
        Language::Go,
        Language::Java,
    ];

    /// Chosen by file extension.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "rs" => Some(Language::Rust),
            "py" | "pyi" => Some(Language::Python),
            "js" | "mjs" | "cjs" | "jsx" => Some(Language::JavaScript),
            "ts" | "mts" | "cts" => Some(Language::TypeScript),
            "tsx" => Some(Language::Tsx),
            "go" => Some(Language::Go),
            "java" => Some(Language::Java),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::Go => "go",
            Language::Java => "java",
        }
    }

    pub fn grammar(self) -> Grammar {
        match self {
            Language::Rust => tree_sitter_rust::LANGUAGE.into(),
            Language::Python => tree_sitter_python::LANGUAGE.into(),
            Language::JavaScript => tree_sitter_javascript::LANGUAGE.into(),
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT.into(),
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX.into(),
            Language::Go => tree_sitter_go::LANGUAGE.into(),
            Language::Java => tree_sitter_java::LANGUAGE.into(),
        }
    }

    /// The grammar's tags query (definitions and references).
    pub fn tags_query(self) -> &'static str {
        match self {
            Language::Rust => tree_sitter_rust::TAGS_QUERY,
            Language::Python => tree_sitter_python::TAGS_QUERY,
            Language::JavaScript => tree_sitter_javascript::TAGS_QUERY,
            Language::TypeScript | Language::Tsx => tree_sitter_typescript::TAGS_QUERY,
            Language::Go => tree_sitter_go::TAGS_QUERY,
            Language::Java => tree_sitter_java::TAGS_QUERY,
        }
    }

    fn is_js_like(self) -> bool {
        matches!(
            self,
            Language::JavaScript | Language::TypeScript | Language::Tsx
        )
    }

    pub fn is_comment(self, kind: &str) -> bool {
        matches!(kind, "comment" | "line_comment" | "block_comment")
    }

    /// Nodes that are functions of their own.
    pub fn is_function(self, kind: &str) -> bool {
        match self {
            Language::Rust => kind == "function_item",
            Language::Python => kind == "function_definition",
            Language::JavaScript | Language::TypeScript | Language::Tsx => matches!(
                kind,
                "function_declaration"
                    | "function_expression"
                    | "generator_function_declaration"
                    | "generator_function"
                    | "arrow_function"
                    | "method_definition"
            ),
            Language::Go => matches!(
                kind,
                "function_declaration" | "method_declaration" | "func_literal"
            ),
            Language::Java => {
                matches!(
                    kind,
                    "method_declaration"
                        | "constructor_declaration"
                        | "compact_constructor_declaration"
                )
            }
        }
    }

    /// Closures and lambdas: part of the enclosing function, one nesting level deeper.
    pub fn is_inline_function(self, kind: &str) -> bool {
        match self {
            Language::Rust => kind == "closure_expression",
            Language::Python => kind == "lambda",
            Language::Java => kind == "lambda_expression",
            _ => false,
        }
    }

    /// Classes, structs, interfaces, enums, traits and named types.
    pub fn is_type(self, kind: &str) -> bool {
        match self {
            Language::Rust => matches!(
                kind,
                "struct_item" | "enum_item" | "trait_item" | "union_item"
            ),
            Language::Python => kind == "class_definition",
            Language::JavaScript => matches!(kind, "class_declaration" | "class"),
            Language::TypeScript | Language::Tsx => matches!(
                kind,
                "class_declaration"
                    | "class"
                    | "abstract_class_declaration"
                    | "interface_declaration"
                    | "type_alias_declaration"
                    | "enum_declaration"
            ),
            Language::Go => kind == "type_spec",
            Language::Java => matches!(
                kind,
                "class_declaration"
                    | "interface_declaration"
                    | "enum_declaration"
                    | "record_declaration"
            ),
        }
    }

    /// One import statement (or one spec of a Go import block).
    pub fn is_import(self, kind: &str) -> bool {
        match self {
            Language::Rust => matches!(
                kind,
                "use_declaration" | "extern_crate_declaration" | "mod_item"
            ),
            Language::Python => matches!(kind, "import_statement" | "import_from_statement"),
            Language::JavaScript | Language::TypeScript | Language::Tsx => {
                kind == "import_statement"
            }
            Language::Go => kind == "import_spec",
            Language::Java => kind == "import_declaration",
        }
    }

    /// `try` blocks: they deepen the nesting depth but, as SonarSource specifies, not the
    /// cognitive nesting level (their `catch` does).
    pub fn is_try(self, kind: &str) -> bool {
        matches!(kind, "try_statement" | "try_with_resources_statement")
    }

    /// `catch`/`except` clauses: they raise the cognitive nesting of their body, but sit at
    /// the depth of their `try`'s body.
    pub fn is_catch(self, kind: &str) -> bool {
        matches!(kind, "catch_clause" | "except_clause")
    }

    /// The `if` construct whose `else` branches are hybrid increments.
    pub fn is_if(self, kind: &str) -> bool {
        matches!(kind, "if_statement" | "if_expression")
    }

    /// How a node counts toward complexity (see the module documentation).
    pub fn role(self, node: Node<'_>, source: &[u8]) -> Role {
        match class_of(self.classes(), node).role {
            Some(role) => role,
            None if node.kind() == "switch_label" => Role {
                cyclomatic: u32::from(node_text(node, source).starts_with("case")),
                cognitive: Cognitive::None,
                nests: false,
            },
            None => self.logical(node, source),
        }
    }

    /// The role of a kind, where the kind alone decides it; `None` where the node's text or
    /// parent matters (boolean operators, Java's `case`/`default` labels).
    fn static_role(self, kind: &str) -> Option<Role> {
        let decision = Role {
            cyclomatic: 1,
            cognitive: Cognitive::Structural,
            nests: true,
        };
        let flat = |cyclomatic| Role {
            cyclomatic,
            cognitive: Cognitive::None,
            nests: false,
        };
        let nest_only = Role {
            cyclomatic: 0,
            cognitive: Cognitive::Structural,
            nests: true,
        };
        Some(match (self, kind) {
            (_, "if_statement" | "if_expression") => decision,
            (Language::Python, "elif_clause") => Role {
                cyclomatic: 1,
                cognitive: Cognitive::Hybrid,
                nests: false,
            },
            (Language::Python, "conditional_expression") => decision,
            (Language::Python, "for_statement" | "while_statement" | "except_clause") => decision,
            (Language::Python, "finally_clause" | "for_in_clause" | "if_clause") => flat(1),
            (Language::Python, "boolean_operator") => return None,
            (Language::Python, "match_statement") => nest_only,
            (Language::Rust, "while_expression" | "loop_expression" | "for_expression") => decision,
            (Language::Rust, "match_expression") => nest_only,
            (Language::Rust, "match_arm") => flat(1),
            (Language::Rust, "try_expression") => flat(1),
            (lang, "for_statement" | "for_in_statement" | "while_statement" | "do_statement")
                if lang.is_js_like() =>
            {
                decision
            }
            (lang, "catch_clause" | "ternary_expression") if lang.is_js_like() => decision,
            (lang, "switch_statement") if lang.is_js_like() => nest_only,
            (lang, "switch_case") if lang.is_js_like() => flat(1),
            (Language::Go, "for_statement") => decision,
            (
                Language::Go,
                "expression_switch_statement" | "type_switch_statement" | "select_statement",
            ) => nest_only,
            (Language::Go, "expression_case" | "type_case" | "communication_case") => flat(1),
            (
                Language::Java,
                "for_statement" | "enhanced_for_statement" | "while_statement" | "do_statement",
            ) => decision,
            (Language::Java, "catch_clause" | "ternary_expression") => decision,
            (Language::Java, "switch_expression") => nest_only,
            (Language::Java, "switch_label") => return None,
            (_, "binary_expression") => return None,
            _ => flat(0),
        })
    }

    fn logical(self, node: Node<'_>, source: &[u8]) -> Role {
        let op = logical_operator(node, source);
        match op {
            Some(op) => {
                // A sequence of like operators (`a && b && c`) is one cognitive increment.
                let continues = node.parent().is_some_and(|p| {
                    p.kind() == node.kind() && logical_operator(p, source) == Some(op)
                });
                let cognitive = if continues {
                    Cognitive::None
                } else {
                    Cognitive::Logical
                };
                Role {
                    cyclomatic: 1,
                    cognitive,
                    nests: false,
                }
            }
            None => Role {
                cyclomatic: 0,
                cognitive: Cognitive::None,
                nests: false,
            },
        }
    }
}

/// What the analysis needs to know of one node kind, precomputed per grammar so the walk
/// looks a kind up by id instead of comparing names.
#[derive(Clone, Copy, Debug, Default)]
pub struct KindClass {
    pub named: bool,
    pub comment: bool,
    pub function: bool,
    pub inline_function: bool,
    pub is_type: bool,
    pub import: bool,
    pub is_if: bool,
    pub is_try: bool,
    pub is_catch: bool,
    /// `None`: the node itself decides (see `static_role`).
    pub role: Option<Role>,
}

impl KindClass {
    /// What a kind outside the table is: `ERROR` and `MISSING` nodes count for nothing.
    pub const OTHER: KindClass = KindClass {
        named: true,
        comment: false,
        function: false,
        inline_function: false,
        is_type: false,
        import: false,
        is_if: false,
        is_try: false,
        is_catch: false,
        role: Some(Role::NONE),
    };
}

/// The class of a node's kind.
pub fn class_of(classes: &[KindClass], node: Node<'_>) -> KindClass {
    classes
        .get(usize::from(node.kind_id()))
        .copied()
        .unwrap_or(KindClass::OTHER)
}

impl Language {
    /// The kind table of this language, built once.
    pub fn classes(self) -> &'static [KindClass] {
        static TABLES: OnceLock<Vec<Vec<KindClass>>> = OnceLock::new();
        let tables =
            TABLES.get_or_init(|| Language::ALL.iter().map(|l| l.build_classes()).collect());
        &tables[Language::ALL.iter().position(|l| *l == self).unwrap_or(0)]
    }

    fn build_classes(self) -> Vec<KindClass> {
        let grammar = self.grammar();
        (0..grammar.node_kind_count())
            .map(|id| {
                let id = id as u16;
                let kind = grammar.node_kind_for_id(id).unwrap_or("");
                let named = grammar.node_kind_is_named(id);
                KindClass {
                    named,
                    comment: named && self.is_comment(kind),
                    function: named && self.is_function(kind),
                    inline_function: named && self.is_inline_function(kind),
                    is_type: named && self.is_type(kind),
                    import: named && self.is_import(kind),
                    is_if: named && self.is_if(kind),
                    is_try: named && self.is_try(kind),
                    is_catch: named && self.is_catch(kind),
                    role: if named {
                        self.static_role(kind)
                    } else {
                        Some(Role::NONE)
                    },
                }
            })
            .collect()
    }
}

fn logical_operator<'a>(node: Node<'_>, source: &'a [u8]) -> Option<&'a str> {
    let op = node.child_by_field_name("operator")?;
    let text = std::str::from_utf8(&source[op.byte_range()]).ok()?;
    matches!(text, "&&" | "||" | "??" | "and" | "or").then_some(text)
}

pub fn node_text<'a>(node: Node<'_>, source: &'a [u8]) -> &'a str {
    std::str::from_utf8(&source[node.byte_range()]).unwrap_or("")
}

/// How one node counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Role {
    /// Added to the cyclomatic complexity.
    pub cyclomatic: u32,
    pub cognitive: Cognitive,
    /// Whether the node's body is one nesting level deeper.
    pub nests: bool,
}

impl Role {
    pub const NONE: Role = Role {
        cyclomatic: 0,
        cognitive: Cognitive::None,
        nests: false,
    };
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Cognitive {
    #[default]
    None,
    /// +1 plus the nesting level.
    Structural,
    /// +1 (`else if`, `elif`, `else`).
    Hybrid,
    /// +1 for a sequence of like boolean operators.
    Logical,
}
