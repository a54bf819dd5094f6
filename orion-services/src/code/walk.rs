//! Which files an analysis reads, and which it skips, by clear rules:
//!
//! - `.gitignore`, `.ignore` and `.git/info/exclude` are respected (also outside a git
//!   checkout), and hidden entries (`.git`, `.venv`, …) are skipped;
//! - build and dependency folders are skipped: `target`, `node_modules`, `vendor`,
//!   `third_party`, `__pycache__`, `dist`, `build`;
//! - only files of a supported language (by extension) are read; `*.min.js` and `*.bundle.js`
//!   are skipped as minified;
//! - a file over [`MAX_FILE_BYTES`] is skipped as generated or data;
//! - after reading: a file with a NUL byte in its first 8 KiB is binary; a file whose first
//!   lines say `@generated` or `DO NOT EDIT` is generated; a file with a line over 1000 bytes
//!   whose lines average over 200 bytes is minified. All three are skipped.
//!
//! Symbolic links are not followed (they could leave the repository).

use std::path::{Path, PathBuf};

use super::Language;

/// Larger source files are treated as generated and skipped.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

const SKIPPED_DIRS: &[&str] = &[
    "target",
    "node_modules",
    "vendor",
    "third_party",
    "__pycache__",
    "dist",
    "build",
];

/// Why a file was not measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    TooLarge,
    Binary,
    Generated,
    Minified,
    Unreadable,
}

/// The supported source files under `root`, in a stable order, and how many were skipped
/// as too large before reading.
pub fn source_files(root: &Path) -> (Vec<(PathBuf, Language)>, u64) {
    let mut found = Vec::new();
    let mut too_large = 0;
    let walker = ignore::WalkBuilder::new(root)
        .hidden(true)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| {
            !(e.file_type().is_some_and(|t| t.is_dir())
                && SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        })
        .build();
    for entry in walker.flatten() {
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let path = entry.path();
        let Some(language) = source_language(path) else {
            continue;
        };
        if entry.metadata().is_ok_and(|m| m.len() > MAX_FILE_BYTES) {
            too_large += 1;
            continue;
        }
        found.push((path.to_owned(), language));
    }
    found.sort();
    (found, too_large)
}

/// The language of a file the rules admit by its name, if any.
fn source_language(path: &Path) -> Option<Language> {
    let name = path.file_name()?.to_string_lossy();
    if name.ends_with(".min.js") || name.ends_with(".bundle.js") {
        return None;
    }
    Language::of(path)
}

/// The name rules for a path inside a repository (as history has it, with no files to
/// look at): no hidden or build folder on the way, a supported language, not minified.
pub fn admits(path: &str) -> Option<Language> {
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    if parts
        .iter()
        .any(|dir| dir.starts_with('.') || SKIPPED_DIRS.contains(dir))
    {
        return None;
    }
    source_language(Path::new(path))
}

/// The rules that need the file's content.
pub fn content_skip(source: &[u8]) -> Option<Skip> {
    let head = &source[..source.len().min(8192)];
    if head.contains(&0) {
        return Some(Skip::Binary);
    }
    let first_lines = head.split(|&b| b == b'\n').take(5);
    for line in first_lines {
        let line = String::from_utf8_lossy(line);
        if line.contains("@generated") || line.contains("DO NOT EDIT") {
            return Some(Skip::Generated);
        }
    }
    let (lines, longest) = source
        .split(|&b| b == b'\n')
        .fold((0usize, 0usize), |(n, longest), line| {
            (n + 1, longest.max(line.len()))
        });
    if longest > 1000 && source.len() / lines.max(1) > 200 {
        return Some(Skip::Minified);
    }
    None
}
