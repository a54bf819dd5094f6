//! The parallel engine: files spread over threads by a shared work index.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tree_sitter::Parser;

use super::file::{self, FileAnalysis};
use super::language::Language;
use super::report::SkipCounts;
use super::walk::{self, Skip};

/// A file's content, read once.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: String,
    pub language: Language,
    pub bytes: Vec<u8>,
}

pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `work` on every item on `threads` threads, each with its own parser; results in
/// item order.
pub(crate) fn parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    work: impl Fn(&mut Parser, &T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    let threads = threads.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let mut parser = Parser::new();
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    local.push((i, work(&mut parser, item)));
                }
                results
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(local);
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// Reads and measures files, each read once; returns the analyses and the skips.
pub fn analyze_paths(
    root: &Path,
    paths: &[(PathBuf, Language)],
    threads: usize,
) -> (Vec<FileAnalysis>, SkipCounts) {
    let outcomes = parallel(paths, threads, |parser, (path, language)| {
        let bytes = std::fs::read(path).map_err(|_| Skip::Unreadable)?;
        if let Some(skip) = walk::content_skip(&bytes) {
            return Err(skip);
        }
        Ok(file::analyze(
            parser,
            relative(root, path),
            *language,
            &bytes,
        ))
    });
    let mut skips = SkipCounts::default();
    let mut files = Vec::with_capacity(outcomes.len());
    for outcome in outcomes {
        match outcome {
            Ok(f) => files.push(f),
            Err(skip) => skips.count(skip),
        }
    }
    (files, skips)
}

/// Reads the files an analysis would measure into memory (for benchmarks).
pub fn load_sources(root: &Path) -> Result<Vec<Source>, super::CodeError> {
    let mut sources = Vec::new();
    for (path, language) in super::source_files(root)? {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if walk::content_skip(&bytes).is_none() {
            sources.push(Source {
                path: relative(root, &path),
                language,
                bytes,
            });
        }
    }
    Ok(sources)
}

/// The full per-file analysis of sources already in memory.
pub fn analyze_sources(sources: &[Source], threads: usize) -> Vec<FileAnalysis> {
    parallel(sources, threads, |parser, s| {
        file::analyze(parser, s.path.clone(), s.language, &s.bytes)
    })
}

/// The baseline: a bare tree-sitter parse of each source; returns the nodes parsed (so the
/// work cannot be optimised away).
pub fn parse_only(sources: &[Source], threads: usize) -> usize {
    parallel(sources, threads, |parser, s| {
        if parser.set_language(&s.language.grammar()).is_err() {
            return 0;
        }
        parser
            .parse(&s.bytes, None)
            .map_or(0, |t| t.root_node().descendant_count())
    })
    .into_iter()
    .sum()
}
