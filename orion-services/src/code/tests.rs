//! Known values per language and metric, on small real snippets with the tricky parts:
//! nested closures and functions, match/switch arms, boolean operator sequences,
//! try/except, ternaries, lambdas, `else if` chains, syntax errors.

use super::{FunctionMetrics, Language, analyze_file, select};

/// (name, parameters, cyclomatic, cognitive, max nesting) of each function, in source order.
fn measures(language: Language, source: &str) -> Vec<(String, u32, u32, u32, u32)> {
    let file = analyze_file("snippet", language, source.as_bytes());
    assert!(!file.syntax_errors, "snippet must parse cleanly");
    file.functions
        .into_iter()
        .map(
            |FunctionMetrics {
                 name,
                 parameters,
                 cyclomatic,
                 cognitive,
                 max_nesting,
                 ..
             }| { (name, parameters, cyclomatic, cognitive, max_nesting) },
        )
        .collect()
}

fn m(
    name: &str,
    parameters: u32,
    cyclomatic: u32,
    cognitive: u32,
    nesting: u32,
) -> (String, u32, u32, u32, u32) {
    (name.to_owned(), parameters, cyclomatic, cognitive, nesting)
}

#[test]
fn python() {
    let source = r#"
def f(a, b=1, *args, **kw):
    if a and b or c:
        for x in args:
            try:
                pass
            except ValueError:
                return [y for y in x if y]
    elif b:
        g = lambda z: z if z else 0
    else:
        pass
    def inner(q, /, *, r):
        while q or r:
            q -= 1
    return 0
"#;
    assert_eq!(
        measures(Language::Python, source),
        [m("f", 4, 10, 13, 3), m("inner", 2, 3, 2, 1)]
    );
}

#[test]
fn rust() {
    let source = r#"
impl S {
    fn g(&self, xs: &[u32], f: impl Fn(u32) -> bool) -> Option<u32> {
        let v = xs.iter().map(|x| if *x > 0 && f(*x) { 1 } else { 0 }).sum::<u32>();
        match v {
            0 => None,
            1 | 2 => Some(v?),
            _ => loop {
                if v > 3 { break Some(v) } else if v > 2 { return None } else { continue }
            },
        }
    }
}
fn plain() {}
"#;
    assert_eq!(
        measures(Language::Rust, source),
        [m("g", 3, 10, 12, 3), m("plain", 0, 1, 0, 0)]
    );
}

#[test]
fn javascript() {
    let source = r#"
function h(a, {b}, ...rest) {
  const k = (x) => x ?? 0;
  switch (a) {
    case 1: return b ? 1 : 2;
    case 2: break;
    default: break;
  }
  do { a-- } while (a > 0 || b);
  try { k(a) } catch (e) { if (e) { throw e } }
  return a && b && rest;
}
"#;
    assert_eq!(
        measures(Language::JavaScript, source),
        [m("h", 3, 10, 9, 2), m("k", 1, 2, 1, 0)]
    );
}

#[test]
fn typescript_and_tsx() {
    let source = r#"
interface P { x: number }
type Q = P | null;
export function t(p: P, q?: Q): number {
  for (const k of Object.keys(p)) { if (!q) { continue; } }
  return q?.x ?? 0;
}
class C { m(): void {} }
"#;
    let file = analyze_file("a.ts", Language::TypeScript, source.as_bytes());
    assert_eq!(file.types, 3);
    assert_eq!(
        measures(Language::TypeScript, source),
        [m("t", 2, 4, 4, 2), m("m", 0, 1, 0, 0)]
    );
    let tsx = "const A = (x: boolean) => <div>{x ? 1 : 2}</div>;\n";
    assert_eq!(measures(Language::Tsx, tsx), [m("A", 1, 2, 1, 1)]);
}

#[test]
fn go() {
    let source = r#"
package main

import (
	"fmt"
	"os"
)

type S struct{}

func (s S) m(a, b int, c ...string) int {
	for i := 0; i < a; i++ {
		if i > b && c != nil {
			fmt.Println(i)
		}
	}
	switch {
	case a > 0:
		return 1
	case b > 0:
		return 2
	default:
	}
	f := func() int { return 0 }
	return f()
}
"#;
    let file = analyze_file("m.go", Language::Go, source.as_bytes());
    assert_eq!((file.types, file.imports.len()), (1, 2));
    assert_eq!(
        measures(Language::Go, source),
        [m("m", 3, 6, 5, 2), m("<anonymous>", 0, 1, 0, 0)]
    );
}

#[test]
fn java() {
    let source = r#"
import java.util.List;
class J {
    J(int a) {}
    int m(List<Integer> xs, int y) {
        for (int x : xs) { if (x > y) { y = x; } else { y--; } }
        Runnable r = () -> { while (y > 0 || y < -5) { } };
        switch (y) { case 1: return 1; case 2: return 2; default: return y > 0 ? 1 : 0; }
    }
}
"#;
    let file = analyze_file("J.java", Language::Java, source.as_bytes());
    assert_eq!((file.types, file.imports.len()), (1, 1));
    assert_eq!(
        measures(Language::Java, source),
        [m("J", 1, 1, 0, 0), m("m", 2, 8, 10, 2)]
    );
}

#[test]
fn a_file_with_syntax_errors_is_measured_where_it_parsed_and_says_so() {
    let source = "def ok(x):\n    if x:\n        return 1\n\ndef broken(:\n    pass\n";
    let file = analyze_file("b.py", Language::Python, source.as_bytes());
    assert!(file.syntax_errors);
    let ok = file
        .functions
        .iter()
        .find(|f| f.name == "ok")
        .expect("the intact function is measured");
    assert_eq!((ok.cyclomatic, ok.start_line, ok.end_line), (2, 1, 3));
    assert_eq!(file.lines, 6);
}

#[test]
fn todos_types_and_imports_are_counted() {
    let source = "use std::fmt;\nmod inner;\n// TODO: split\nstruct A;\nenum B { X }\ntrait T {}\n/* FIXME */ fn f() {}\n";
    let file = analyze_file("a.rs", Language::Rust, source.as_bytes());
    assert_eq!((file.todos, file.types, file.imports.len()), (2, 3, 2));
    assert_eq!(file.imports, ["use std::fmt;", "mod inner;"]);
}

fn graph_of(files: &[(&str, Language, &str)]) -> super::DependencyGraph {
    let analyses: Vec<_> = files
        .iter()
        .map(|(p, l, s)| analyze_file(p, *l, s.as_bytes()))
        .collect();
    super::dependency_graph(&analyses)
}

fn edges(graph: &super::DependencyGraph, language: Language) -> Vec<(&str, &str)> {
    graph.languages[&language]
        .edges
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect()
}

#[test]
fn python_imports_resolve_absolute_and_relative_and_cycles_are_found() {
    let graph = graph_of(&[
        ("pkg/__init__.py", Language::Python, ""),
        ("pkg/a.py", Language::Python, "from . import b\nimport os\n"),
        ("pkg/b.py", Language::Python, "from pkg.c import thing\n"),
        ("pkg/c.py", Language::Python, "from .a import x\n"),
        ("pkg/sub/__init__.py", Language::Python, ""),
        (
            "pkg/sub/d.py",
            Language::Python,
            "from ..c import y\nimport pkg.a\n",
        ),
    ]);
    assert_eq!(
        edges(&graph, Language::Python),
        [
            ("pkg/a.py", "pkg/b.py"),
            ("pkg/b.py", "pkg/c.py"),
            ("pkg/c.py", "pkg/a.py"),
            ("pkg/sub/d.py", "pkg/a.py"),
            ("pkg/sub/d.py", "pkg/c.py"),
        ]
    );
    let python = &graph.languages[&Language::Python];
    assert_eq!(python.cycles, [vec!["pkg/a.py", "pkg/b.py", "pkg/c.py"]]);
    assert_eq!(
        python.external_imports, 1,
        "`import os` is outside the repository"
    );
    assert_eq!(
        python.layers[0],
        [
            "pkg/__init__.py",
            "pkg/a.py",
            "pkg/b.py",
            "pkg/c.py",
            "pkg/sub/__init__.py"
        ]
    );
    assert_eq!(python.layers[1], ["pkg/sub/d.py"]);
    assert!(graph.mermaid.starts_with("graph LR\n"));
    assert!(graph.mermaid.contains("[\"pkg/sub/d.py\"]"));
}

#[test]
fn script_rust_go_and_java_imports_resolve() {
    let graph = graph_of(&[
        (
            "web/app.ts",
            Language::TypeScript,
            "import { x } from './lib/util';\nimport React from 'react';\n",
        ),
        (
            "web/lib/util.ts",
            Language::TypeScript,
            "import y from '../index';\n",
        ),
        ("web/index.js", Language::JavaScript, "export default 1;\n"),
        (
            "src/lib.rs",
            Language::Rust,
            "mod store;\nuse crate::store::Row;\n",
        ),
        (
            "src/store.rs",
            Language::Rust,
            "mod sql;\nuse super::helpers;\n",
        ),
        ("src/store/sql.rs", Language::Rust, "use crate::store;\n"),
        (
            "cmd/main.go",
            Language::Go,
            "package main\nimport (\n\t\"example.com/m/internal/db\"\n\t\"fmt\"\n)\n",
        ),
        ("internal/db/db.go", Language::Go, "package db\n"),
        (
            "src/main/java/a/App.java",
            Language::Java,
            "package a;\nimport a.b.Repo;\nimport java.util.List;\nclass App {}\n",
        ),
        (
            "src/main/java/a/b/Repo.java",
            Language::Java,
            "package a.b;\nclass Repo {}\n",
        ),
    ]);
    assert_eq!(
        edges(&graph, Language::TypeScript),
        [
            ("web/app.ts", "web/lib/util.ts"),
            ("web/lib/util.ts", "web/index.js")
        ]
    );
    assert_eq!(
        edges(&graph, Language::Rust),
        [
            ("src/lib.rs", "src/store.rs"),
            ("src/store.rs", "src/store/sql.rs"),
            ("src/store/sql.rs", "src/store.rs")
        ]
    );
    assert_eq!(
        graph.languages[&Language::Rust].cycles,
        [vec!["src/store.rs", "src/store/sql.rs"]]
    );
    assert_eq!(edges(&graph, Language::Go), [("cmd", "internal/db")]);
    assert_eq!(
        edges(&graph, Language::Java),
        [("src/main/java/a/App.java", "src/main/java/a/b/Repo.java")]
    );
}

#[test]
fn every_language_has_definitions_and_references() {
    let cases: [(Language, &str, &str, &str); 7] = [
        (
            Language::Rust,
            "fn helper() {}\nfn main() { helper(); }\n",
            "helper",
            "main",
        ),
        (
            Language::Python,
            "def helper():\n    pass\n\ndef main():\n    helper()\n",
            "helper",
            "main",
        ),
        (
            Language::JavaScript,
            "function helper() {}\nfunction main() { helper(); }\n",
            "helper",
            "main",
        ),
        (
            Language::TypeScript,
            "function helper(): void {}\nfunction main() { helper(); }\n",
            "helper",
            "main",
        ),
        (
            Language::Tsx,
            "function helper() { return <b/>; }\nfunction main() { helper(); }\n",
            "helper",
            "main",
        ),
        (
            Language::Go,
            "package p\nfunc helper() {}\nfunc main() { helper() }\n",
            "helper",
            "main",
        ),
        (
            Language::Java,
            "class A { void helper() {} void main() { helper(); } }\n",
            "helper",
            "main",
        ),
    ];
    for (language, source, callee, caller) in cases {
        let tags = super::tags(
            &mut tree_sitter::Parser::new(),
            language,
            "f",
            source.as_bytes(),
        );
        let defined: Vec<&str> = tags
            .iter()
            .filter(|t| t.definition)
            .map(|t| t.name.as_str())
            .collect();
        assert!(
            defined.contains(&callee) && defined.contains(&caller),
            "{language:?} definitions {defined:?}"
        );
        assert!(
            tags.iter().any(|t| !t.definition && t.name == callee),
            "{language:?}: the call of {callee} is a reference: {tags:?}"
        );
    }
}

#[test]
fn the_repository_map_ranks_the_most_referenced_definitions_first_and_fits_its_budget() {
    let sources: Vec<super::Source> = [
        (
            "core.py",
            "def load():\n    pass\n\ndef unused():\n    pass\n",
        ),
        ("a.py", "from core import load\n\ndef a():\n    load()\n"),
        (
            "b.py",
            "from core import load\n\ndef b():\n    load()\n    a()\n",
        ),
    ]
    .iter()
    .map(|(p, s)| super::Source {
        path: (*p).into(),
        language: Language::Python,
        bytes: s.as_bytes().to_vec(),
    })
    .collect();
    let index = super::SymbolIndex::build(&sources, 2);
    assert_eq!(
        index.definition("load"),
        [super::Location {
            path: "core.py".into(),
            line: 1,
            kind: "function".into()
        }]
    );
    let outline: Vec<(String, u32)> = index
        .outline("core.py")
        .into_iter()
        .map(|t| (t.name, t.line))
        .collect();
    assert_eq!(outline, [("load".to_owned(), 1), ("unused".to_owned(), 4)]);
    let map = index.repo_map(1000);
    assert!(map.text.starts_with("core.py:\n  function load (line 1, 2 refs)\n  function unused (line 4, 0 refs)\na.py:\n"), "{}", map.text);
    assert_eq!((map.files, map.definitions), (3, 4));
    let small = index.repo_map(11);
    assert!(
        small.tokens <= 11 && small.definitions == 1 && small.files == 1,
        "{small:?}"
    );
}

fn py(path: &str, text: &str) -> super::Source {
    super::Source {
        path: path.into(),
        language: Language::Python,
        bytes: text.as_bytes().to_vec(),
    }
}

fn docs_of(sources: &[super::Source]) -> Vec<select::FileDoc> {
    let mut parser = tree_sitter::Parser::new();
    sources
        .iter()
        .map(|s| select::FileDoc::build(&mut parser, s))
        .collect()
}

/// The paths `select` ranks, best first, and each one's signals.
fn ranked(
    docs: &[select::FileDoc],
    query: &str,
    cochange: Option<&select::CoChange>,
) -> Vec<(String, Vec<String>)> {
    let refs: Vec<&select::FileDoc> = docs.iter().collect();
    select::select(&refs, query, cochange, &select::SelectWeights::default())
        .into_iter()
        .map(|r| (r.path, r.signals.into_keys().collect()))
        .collect()
}

#[test]
fn words_split_identifiers_drop_noise_and_meet_at_one_stem() {
    let words: Vec<String> = select::words("parseEditsFromHTTPResponse_v2 the parsing").collect();
    assert_eq!(words, ["pars", "edit", "http", "respons", "pars"]);
    let stems: Vec<String> = select::words("compute computed computes entries entry").collect();
    assert_eq!(stems, ["comput", "comput", "comput", "entry", "entry"]);
}

#[test]
fn bm25_prefers_the_rarer_word_and_the_denser_file() {
    let docs = docs_of(&[
        py("a.py", "invoice invoice invoice\nx = 1\n"),
        py("b.py", "invoice\nx = 1\ny = 2\nz = 3\n"),
        py("c.py", "ledger\n"),
    ]);
    let refs: Vec<&select::FileDoc> = docs.iter().collect();
    let terms: Vec<String> = select::words("invoice ledger").collect();
    let scores = select::bm25(&refs, &terms, false);
    assert!(scores[0] > scores[1], "denser first: {scores:?}");
    assert!(
        scores[2] > scores[0],
        "the rarer word weighs more: {scores:?}"
    );
}

#[test]
fn the_path_and_symbol_signals_find_files_by_name_and_by_definition() {
    let docs = docs_of(&[
        py("billing/invoice.py", "x = 1\n"),
        py("money.py", "def compute_total(items):\n    return 0\n"),
        py("other.py", "y = 2\n"),
    ]);
    let ranking = ranked(&docs, "The invoice total is computed wrong", None);
    let find = |p: &str| {
        ranking
            .iter()
            .find(|(path, _)| path == p)
            .unwrap()
            .1
            .clone()
    };
    assert!(find("billing/invoice.py").contains(&"path".to_owned()));
    assert!(find("money.py").contains(&"symbols".to_owned()));
    assert!(ranking.iter().all(|(p, _)| p != "other.py"), "{ranking:?}");
}

#[test]
fn a_name_the_task_spells_out_puts_its_file_first() {
    let docs = docs_of(&[
        py("config.py", "def load_settings():\n    pass\n"),
        py(
            "loader.py",
            "# the loader loads and loads\ndef load():\n    pass\n",
        ),
    ]);
    let ranking = ranked(&docs, "load_settings ignores the defaults", None);
    assert_eq!(ranking[0].0, "config.py");
    assert!(ranking[0].1.contains(&"mentions".to_owned()));

    // A path counts whole: `billing/invoice.py` is not `voice.py`.
    let docs = docs_of(&[
        py("billing/invoice.py", "x = 1\n"),
        py("voice.py", "y = 2\n"),
    ]);
    let ranking = ranked(&docs, "crash in billing/invoice.py", None);
    assert_eq!(ranking[0].0, "billing/invoice.py");
    assert!(ranking[0].1.contains(&"mentions".to_owned()));
    assert!(ranking.iter().all(|(p, _)| p != "voice.py"), "{ranking:?}");
}

#[test]
fn the_graph_reaches_a_file_the_task_does_not_name_through_references() {
    let docs = docs_of(&[
        py(
            "checkout.py",
            "from pricing import discount\ndef checkout(cart):\n    return discount(cart)\n",
        ),
        py("pricing.py", "def discount(cart):\n    return 0\n"),
        py("unrelated.py", "def other():\n    pass\n"),
    ]);
    let ranking = ranked(&docs, "checkout charges too much", None);
    assert_eq!(ranking[0].0, "checkout.py");
    let pricing = ranking
        .iter()
        .find(|(p, _)| p == "pricing.py")
        .expect("pricing is reached");
    assert!(pricing.1.contains(&"graph".to_owned()), "{ranking:?}");
    assert!(ranking.iter().all(|(p, _)| p != "unrelated.py"));
}

#[test]
fn co_change_history_brings_in_the_files_that_change_with_the_matches() {
    let docs = docs_of(&[
        py("server.py", "def serve():\n    pass\n"),
        py("schema.py", "x = 1\n"),
        py("readme_gen.py", "y = 1\n"),
    ]);
    let mut history = select::CoChange::default();
    for _ in 0..3 {
        history.add_commit(&["server.py".into(), "schema.py".into()]);
    }
    history.add_commit(&["readme_gen.py".into()]);
    let sweeping: Vec<String> = (0..40)
        .map(|i| format!("f{i}.py"))
        .chain(["readme_gen.py".into(), "server.py".into()])
        .collect();
    history.add_commit(&sweeping);
    let with = ranked(&docs, "serve requests faster", Some(&history));
    assert_eq!(with[1].0, "schema.py", "{with:?}");
    assert_eq!(with[1].1, ["cochange"]);
    assert!(
        with.iter().all(|(p, _)| p != "readme_gen.py"),
        "a sweeping commit counts for nothing: {with:?}"
    );
    let without = ranked(&docs, "serve requests faster", None);
    assert!(without.iter().all(|(p, _)| p != "schema.py"));
}

#[test]
fn the_prompt_shows_the_selected_files_cut_to_size_with_the_reasons() {
    let sources = vec![
        py(
            "billing/invoice.py",
            "def total(invoice):\n    return invoice.amount\n",
        ),
        py("util.py", "def helper():\n    pass\n"),
        py(
            "big.py",
            &format!("# invoice\n{}", "# filler\n".repeat(4000)),
        ),
    ];
    let context = super::prompt_context(
        &sources,
        "fix the invoice total",
        200,
        1,
        None,
        &select::SelectWeights::default(),
    );
    let paths: Vec<&str> = context.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["billing/invoice.py", "big.py"],
        "util.py has nothing of the task"
    );
    assert!(
        context.files[1].1.len() < super::RELEVANT_FILE_BYTES + 20
            && context.files[1].1.ends_with("… (cut)\n")
    );
    assert_eq!(context.selection[0].path, "billing/invoice.py");
    assert!(context.selection[0].signals["path"] > 0.0);
    assert!(
        context.map.text.contains("function total"),
        "{}",
        context.map.text
    );
}

#[test]
fn the_prompt_adds_the_functions_its_files_do_not_show_and_knows_what_it_showed_whole() {
    // The function the task is about lies past the cut of a shown file; another of its
    // words lies in a file ranked below the three shown whole.
    let filler: String = (0..400)
        .map(|i| format!("def filler_{i}():\n    return {i}\n"))
        .collect();
    let sources = vec![
        py(
            "billing/invoice.py",
            &format!(
                "{filler}def apply_discount(invoice, rate):\n    return invoice.total * rate\n"
            ),
        ),
        py(
            "billing/tax.py",
            "def invoice_tax(invoice):\n    return invoice.total / 5\n",
        ),
        py(
            "billing/print.py",
            "def print_invoice(invoice):\n    return str(invoice)\n",
        ),
        py(
            "billing/notes.py",
            "def invoice_notes(invoice):\n    return invoice.notes\n",
        ),
        py(
            "shop/cart.py",
            "def discount_rate(cart):\n    return 0.1\n\ndef unrelated():\n    return 2\n",
        ),
    ];
    let context = super::prompt_context(
        &sources,
        "the invoice discount is applied twice",
        200,
        1,
        None,
        &select::SelectWeights::default(),
    );
    assert_eq!(context.files.len(), super::RELEVANT_FILES);
    let shown: Vec<&str> = context.files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(shown[0], "billing/invoice.py", "{shown:?}");
    assert!(context.files[0].1.ends_with(super::CUT_MARK));
    let excerpts: Vec<(&str, &str)> = context
        .excerpts
        .iter()
        .map(|e| (e.path.as_str(), e.name.as_str()))
        .collect();
    assert!(
        excerpts.contains(&("billing/invoice.py", "apply_discount")),
        "the function past the cut: {excerpts:?}"
    );
    let past_cut = &context.excerpts[excerpts
        .iter()
        .position(|e| e.1 == "apply_discount")
        .unwrap()];
    assert_eq!(
        past_cut.text,
        "def apply_discount(invoice, rate):\n    return invoice.total * rate\n"
    );
    assert_eq!((past_cut.start, past_cut.end), (801, 802));
    assert!(
        excerpts
            .iter()
            .all(|(_, name)| !name.starts_with("filler") && *name != "unrelated"),
        "only functions with a word of the task: {excerpts:?}"
    );
    assert!(
        excerpts
            .iter()
            .all(|(path, _)| *path == "billing/invoice.py" || !shown.contains(path)),
        "nothing a whole shown file already holds: {excerpts:?}"
    );
    let bytes: usize = context.excerpts.iter().map(|e| e.text.len()).sum();
    assert!(bytes <= super::EXCERPT_BYTES && context.excerpts.len() <= super::EXCERPTS);
    assert_eq!(
        context.whole,
        shown[1..].iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "the cut file is not shown whole"
    );
    let mut partial = context.seen_in_part();
    partial.sort();
    let mut expected: Vec<&str> = excerpts
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| *p == "billing/invoice.py" || !shown.contains(p))
        .collect();
    expected.sort();
    expected.dedup();
    assert_eq!(
        partial, expected,
        "the cut file and the files only excerpted"
    );
}

/// A repository of its own in the system's temporary folder, with one commit of `files`.
fn repository_with(files: &[(&str, &str)]) -> std::path::PathBuf {
    let root =
        std::env::temp_dir().join(format!("orion-cochange-{}", uuid::Uuid::new_v4().simple()));
    git2::Repository::init(&root).unwrap();
    commit_files(&root, files);
    root
}

/// One more commit of `files` on the repository at `root`.
fn commit_files(root: &std::path::Path, files: &[(&str, &str)]) {
    for (path, text) in files {
        std::fs::write(root.join(path), text).unwrap();
    }
    commit_all(root, "c", None);
}

/// Commits everything in the working tree of the repository at `root` on HEAD, dated `when`
/// (seconds since 1970) or now.
pub(super) fn commit_all(root: &std::path::Path, message: &str, when: Option<i64>) -> git2::Oid {
    let repo = git2::Repository::open(root).unwrap();
    let signature = match when {
        Some(seconds) => {
            git2::Signature::new("test", "test@orion.invalid", &git2::Time::new(seconds, 0))
        }
        None => git2::Signature::now("test", "test@orion.invalid"),
    }
    .unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )
    .unwrap()
}

/// A second prompt on a repository at the same commit reads none of its history again (the
/// same history comes back); a new commit is read anew.
#[test]
fn the_co_change_history_is_read_once_per_head_commit() {
    let root = repository_with(&[("a.py", "x = 1\n"), ("b.py", "y = 1\n")]);
    let first = super::cochange_of(&root).unwrap();
    let again = super::cochange_of(&root).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again), "read again");
    commit_files(&root, &[("a.py", "x = 2\n")]);
    let moved = super::cochange_of(&root).unwrap();
    assert!(
        !std::sync::Arc::ptr_eq(&first, &moved),
        "a new HEAD is read"
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// Context selection finds a file's functions by a walk of the tree its tags are read from
/// (no metrics): the same functions, names and lines as the analysis, on all of Orion's
/// sources and on nested and anonymous functions of the languages Orion has none of.
#[test]
fn function_spans_find_what_the_analysis_measures() {
    let mut parser = tree_sitter::Parser::new();
    let mut check = |path: &str, language: Language, bytes: &[u8]| {
        let analysis = super::file::analyze(&mut parser, path.to_owned(), language, bytes);
        let measured: Vec<(String, u32, u32)> = analysis
            .functions
            .iter()
            .map(|f| (f.name.clone(), f.start_line, f.end_line))
            .collect();
        let source = super::Source {
            path: path.to_owned(),
            language,
            bytes: bytes.to_vec(),
        };
        let spans: Vec<(String, u32, u32)> = select::FileDoc::build(&mut parser, &source)
            .functions
            .into_iter()
            .map(|s| (s.name, s.start_line, s.end_line))
            .collect();
        assert_eq!(spans, measured, "{path}");
        measured.len()
    };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut functions = 0;
    for source in super::load_sources(&root).unwrap() {
        functions += check(&source.path, source.language, &source.bytes);
    }
    assert!(functions > 1000, "{functions} functions in Orion's sources");
    let snippets = [
        (
            "a.go",
            Language::Go,
            "package m\nfunc f() func() int {\n\tg := func() int { return 1 }\n\treturn g\n}\ntype T struct{}\nfunc (t T) M() {}\n",
        ),
        (
            "A.java",
            Language::Java,
            "class A {\n  A() {}\n  void m() {\n    Runnable r = () -> {};\n    new Object() { public String toString() { return \"\"; } };\n  }\n}\n",
        ),
        (
            "a.ts",
            Language::TypeScript,
            "export const f = (x: number) => x;\nclass C { m() { return function inner() {}; } }\nconst o = { k: () => 1, v() {} };\n",
        ),
        (
            "a.py",
            Language::Python,
            "def f():\n    def g():\n        return lambda x: x\n    return g\nclass C:\n    def m(self):\n        pass\n",
        ),
    ];
    for (path, language, text) in snippets {
        assert!(check(path, language, text.as_bytes()) >= 3, "{path}");
    }
}
