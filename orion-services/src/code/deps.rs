//! The module dependency graph of a repository, per language, from its import statements.
//!
//! Nodes are files (Go: package directories). Only imports that resolve to a file of the
//! repository become edges; the rest (standard library, third-party packages) are counted
//! as external. Resolution per language:
//! - Python: dotted module names from the package structure (`__init__.py`), absolute and
//!   relative (`from ..pkg import x`) imports, `from a import b` trying `a.b` then `a`;
//! - JavaScript / TypeScript: relative specifiers (`./x`, `../y`) with the usual extensions
//!   and `index` files;
//! - Rust: `mod x;` declarations and `use crate::…`, `use super::…`, `use self::…` paths;
//! - Go: import paths whose tail names a package directory of the repository;
//! - Java: `import a.b.C;` to `…/a/b/C.java`, `import a.b.*;` to the files of `…/a/b/`.
//!
//! Cycles are the strongly connected components (Tarjan) with more than one node or a
//! self-import; layers rank the condensed graph: layer 0 depends on nothing inside the
//! repository, layer n on layers below n only.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::file::FileAnalysis;
use super::language::Language;

/// Edges drawn at most in the Mermaid rendering, to stay readable.
const MERMAID_EDGES: usize = 300;

/// One language's graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageGraph {
    pub nodes: Vec<String>,
    pub edges: Vec<(String, String)>,
    pub cycles: Vec<Vec<String>>,
    pub layers: Vec<Vec<String>>,
    /// Imports that name nothing in the repository.
    pub external_imports: u64,
}

/// The whole repository's graph.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependencyGraph {
    pub languages: BTreeMap<Language, LanguageGraph>,
    /// `graph LR` Mermaid text of all languages' edges.
    pub mermaid: String,
}

fn dir_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(d, _)| d)
}

fn join(dir: &str, rest: &str) -> String {
    let mut parts: Vec<&str> = if dir.is_empty() {
        Vec::new()
    } else {
        dir.split('/').collect()
    };
    for part in rest.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// Quoted string literals in an import statement.
fn quoted(text: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(['"', '\'', '`']) {
        let quote = rest.as_bytes()[start] as char;
        let after = &rest[start + 1..];
        let Some(end) = after.find(quote) else { break };
        found.push(&after[..end]);
        rest = &after[end + 1..];
    }
    found
}

struct Resolver<'a> {
    files: HashSet<&'a str>,
    python_modules: HashMap<String, &'a str>,
    go_packages: Vec<String>,
}

impl<'a> Resolver<'a> {
    fn new(analyses: &'a [FileAnalysis]) -> Self {
        let files: HashSet<&str> = analyses.iter().map(|f| f.path.as_str()).collect();
        let mut python_modules = HashMap::new();
        for f in analyses.iter().filter(|f| f.language == Language::Python) {
            let Some(stem) = f.path.strip_suffix(".py") else {
                continue;
            };
            // The module name counts from the topmost directory that is still a package.
            let mut parts: Vec<&str> = stem.split('/').collect();
            let mut top = parts.len() - 1;
            while top > 0
                && files.contains(format!("{}/__init__.py", parts[..top].join("/")).as_str())
            {
                top -= 1;
            }
            let mut name_parts = parts.split_off(top.min(parts.len() - 1));
            if top > 0 && !files.contains(format!("{}/__init__.py", parts.join("/")).as_str()) {
                // `top` is not a package: the module starts below it.
            }
            if name_parts.last() == Some(&"__init__") {
                name_parts.pop();
            }
            if !name_parts.is_empty() {
                python_modules.insert(name_parts.join("."), f.path.as_str());
            }
        }
        let go_packages = analyses
            .iter()
            .filter(|f| f.language == Language::Go)
            .map(|f| dir_of(&f.path).to_owned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        Self {
            files,
            python_modules,
            go_packages,
        }
    }

    fn file(&self, candidate: &str) -> Option<String> {
        self.files.contains(candidate).then(|| candidate.to_owned())
    }

    /// The nodes an import statement of `from` points to inside the repository.
    fn resolve(&self, from: &FileAnalysis, import: &str) -> Vec<String> {
        match from.language {
            Language::Python => self.python(from, import),
            Language::JavaScript | Language::TypeScript | Language::Tsx => quoted(import)
                .into_iter()
                .filter(|s| s.starts_with('.'))
                .filter_map(|s| self.script(&join(dir_of(&from.path), s)))
                .collect(),
            Language::Rust => self.rust(from, import),
            Language::Go => quoted(import)
                .into_iter()
                .filter_map(|path| {
                    self.go_packages
                        .iter()
                        .filter(|dir| {
                            !dir.is_empty()
                                && (path == dir.as_str() || path.ends_with(&format!("/{dir}")))
                        })
                        .max_by_key(|dir| dir.len())
                        .cloned()
                })
                .collect(),
            Language::Java => self.java(import),
        }
    }

    fn script(&self, base: &str) -> Option<String> {
        const EXTENSIONS: [&str; 6] = ["ts", "tsx", "js", "jsx", "mjs", "cjs"];
        self.file(base)
            .or_else(|| {
                EXTENSIONS
                    .iter()
                    .find_map(|e| self.file(&format!("{base}.{e}")))
            })
            .or_else(|| {
                EXTENSIONS
                    .iter()
                    .find_map(|e| self.file(&format!("{base}/index.{e}")))
            })
    }

    fn python(&self, from: &FileAnalysis, import: &str) -> Vec<String> {
        let module_of = |name: &str| -> Option<String> {
            let mut name = name.to_owned();
            loop {
                if let Some(file) = self.python_modules.get(&name) {
                    return Some((*file).to_owned());
                }
                let (head, _) = name.rsplit_once('.')?;
                name = head.to_owned();
            }
        };
        let here = self
            .python_modules
            .iter()
            .find(|(_, f)| **f == from.path)
            .map(|(m, _)| m.clone())
            .unwrap_or_default();
        let text = import.trim();
        let mut names = Vec::new();
        if let Some(rest) = text.strip_prefix("from ") {
            let Some((module, imported)) = rest.split_once(" import ") else {
                return Vec::new();
            };
            let dots = module.chars().take_while(|c| *c == '.').count();
            let mut base = module[dots..].to_owned();
            if dots > 0 {
                let mut package: Vec<&str> = here.split('.').collect();
                if !from.path.ends_with("__init__.py") {
                    package.pop();
                }
                for _ in 1..dots {
                    package.pop();
                }
                let prefix = package.join(".");
                base = [prefix.as_str(), base.as_str()]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(".");
            }
            for item in imported.trim_matches(|c| c == '(' || c == ')').split(',') {
                let item = item.split_whitespace().next().unwrap_or("");
                if !item.is_empty() && item != "*" {
                    names.push(if base.is_empty() {
                        item.to_owned()
                    } else {
                        format!("{base}.{item}")
                    });
                }
            }
            if names.is_empty() {
                names.push(base);
            }
        } else if let Some(rest) = text.strip_prefix("import ") {
            names.extend(
                rest.split(',')
                    .filter_map(|m| m.split_whitespace().next())
                    .map(str::to_owned),
            );
        }
        names.iter().filter_map(|n| module_of(n)).collect()
    }

    fn rust(&self, from: &FileAnalysis, import: &str) -> Vec<String> {
        let text = import.trim().trim_end_matches(';');
        let file_name = from.path.rsplit('/').next().unwrap_or("");
        let own_dir = if matches!(file_name, "mod.rs" | "lib.rs" | "main.rs") {
            dir_of(&from.path).to_owned()
        } else {
            from.path.trim_end_matches(".rs").to_owned()
        };
        let module_file = |dir: &str, segments: &[&str]| -> Option<String> {
            // The longest prefix of the path that names a module file.
            (1..=segments.len()).rev().find_map(|n| {
                let base = join(dir, &segments[..n].join("/"));
                self.file(&format!("{base}.rs"))
                    .or_else(|| self.file(&format!("{base}/mod.rs")))
            })
        };
        if let Some(name) = text
            .strip_prefix("mod ")
            .or_else(|| text.strip_prefix("pub mod "))
        {
            return module_file(&own_dir, &[name.trim()]).into_iter().collect();
        }
        let Some(path) = text.split_whitespace().last() else {
            return Vec::new();
        };
        let segments: Vec<&str> = path
            .split("::")
            .map(|s| s.trim_matches(|c| c == '{' || c == '}'))
            .collect();
        let (dir, rest) = match segments.first() {
            Some(&"crate") => {
                let mut dir = dir_of(&from.path).to_owned();
                while !self
                    .files
                    .contains(format!("{dir}/lib.rs").trim_start_matches('/'))
                    && !self
                        .files
                        .contains(format!("{dir}/main.rs").trim_start_matches('/'))
                    && !dir.is_empty()
                {
                    dir = dir_of(&dir).to_owned();
                }
                (dir, &segments[1..])
            }
            Some(&"super") => (dir_of(&own_dir).to_owned(), &segments[1..]),
            Some(&"self") => (own_dir.clone(), &segments[1..]),
            _ => return Vec::new(),
        };
        module_file(&dir, rest).into_iter().collect()
    }

    fn java(&self, import: &str) -> Vec<String> {
        let text = import
            .trim()
            .trim_start_matches("import")
            .trim()
            .trim_start_matches("static")
            .trim()
            .trim_end_matches(';');
        let path = text.replace('.', "/");
        if let Some(package) = path.strip_suffix("/*") {
            let suffix = format!("{package}/");
            return self
                .files
                .iter()
                .filter(|f| {
                    f.ends_with(".java")
                        && (f.starts_with(&suffix) || f.contains(&format!("/{suffix}")))
                })
                .filter(|f| !f[f.find(&suffix).unwrap_or(0) + suffix.len()..].contains('/'))
                .map(|f| (*f).to_owned())
                .collect();
        }
        let wanted = format!("{path}.java");
        self.files
            .iter()
            .filter(|f| **f == wanted || f.ends_with(&format!("/{wanted}")))
            .map(|f| (*f).to_owned())
            .collect()
    }
}

/// Strongly connected components (Tarjan, iterative).
fn components(n: usize, adjacency: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut result = Vec::new();
    let mut counter = 0;
    for start in 0..n {
        if index[start] != usize::MAX {
            continue;
        }
        let mut work = vec![(start, 0usize)];
        while let Some(&mut (v, ref mut next)) = work.last_mut() {
            if *next == 0 && index[v] == usize::MAX {
                index[v] = counter;
                low[v] = counter;
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = adjacency[v].get(*next) {
                *next += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                result.push(component);
            }
        }
    }
    result
}

fn language_graph(analyses: &[&FileAnalysis], resolver: &Resolver<'_>) -> LanguageGraph {
    let mut graph = LanguageGraph::default();
    let mut edges = HashSet::new();
    let node_of = |f: &FileAnalysis| {
        if f.language == Language::Go {
            dir_of(&f.path).to_owned()
        } else {
            f.path.clone()
        }
    };
    let mut nodes: Vec<String> = analyses
        .iter()
        .map(|f| node_of(f))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    nodes.sort();
    for f in analyses {
        for import in &f.imports {
            let targets = resolver.resolve(f, import);
            if targets.is_empty() {
                graph.external_imports += 1;
            }
            for target in targets {
                edges.insert((node_of(f), target));
            }
        }
    }
    let position: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut adjacency = vec![Vec::new(); nodes.len()];
    let mut self_loops = HashSet::new();
    for (from, to) in &edges {
        if let (Some(&a), Some(&b)) = (position.get(from.as_str()), position.get(to.as_str())) {
            if a == b {
                self_loops.insert(a);
            } else {
                adjacency[a].push(b);
            }
        }
    }
    let sccs = components(nodes.len(), &adjacency);
    let mut component_of = vec![0; nodes.len()];
    for (c, members) in sccs.iter().enumerate() {
        for &m in members {
            component_of[m] = c;
        }
    }
    // Tarjan emits components in reverse topological order: dependencies first.
    let mut layer_of = vec![0usize; sccs.len()];
    for (c, members) in sccs.iter().enumerate() {
        let deps = members
            .iter()
            .flat_map(|&m| adjacency[m].iter())
            .map(|&w| component_of[w])
            .filter(|&d| d != c);
        layer_of[c] = deps.map(|d| layer_of[d] + 1).max().unwrap_or(0);
    }
    let depth = layer_of.iter().copied().max().map_or(0, |m| m + 1);
    graph.layers = vec![Vec::new(); depth];
    for (i, name) in nodes.iter().enumerate() {
        graph.layers[layer_of[component_of[i]]].push(name.clone());
    }
    graph.cycles = sccs
        .iter()
        .filter(|m| m.len() > 1 || self_loops.contains(&m[0]))
        .map(|m| {
            let mut names: Vec<String> = m.iter().map(|&i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect();
    graph.cycles.sort();
    let mut edges: Vec<(String, String)> = edges.into_iter().collect();
    edges.sort();
    graph.edges = edges;
    graph.nodes = nodes;
    graph
}

fn mermaid(languages: &BTreeMap<Language, LanguageGraph>) -> String {
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut text = String::from("graph LR\n");
    let mut id = |name: &str, text: &mut String| {
        let next = ids.len();
        *ids.entry(name.to_owned()).or_insert_with(|| {
            text.push_str(&format!("  n{next}[\"{}\"]\n", name.replace('"', "'")));
            next
        })
    };
    for (from, to) in languages
        .values()
        .flat_map(|g| g.edges.iter())
        .take(MERMAID_EDGES)
    {
        let a = id(from, &mut text);
        let b = id(to, &mut text);
        text.push_str(&format!("  n{a} --> n{b}\n"));
    }
    text
}

/// The dependency graph of analysed files.
pub fn dependency_graph(analyses: &[FileAnalysis]) -> DependencyGraph {
    let resolver = Resolver::new(analyses);
    let mut by_language: BTreeMap<Language, Vec<&FileAnalysis>> = BTreeMap::new();
    for f in analyses {
        by_language.entry(f.language).or_default().push(f);
    }
    let languages: BTreeMap<Language, LanguageGraph> = by_language
        .into_iter()
        .map(|(l, files)| (l, language_graph(&files, &resolver)))
        .collect();
    let mermaid = mermaid(&languages);
    DependencyGraph { languages, mermaid }
}
