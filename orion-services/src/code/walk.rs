//! Which files an analysis reads.
//!
//! Rules: hidden entries (`.git`, `.venv`, …) and build or dependency folders (`target`,
//! `node_modules`, `__pycache__`, `vendor`, `dist`, `build`) are skipped; symbolic links are
//! not followed (they could leave the repository); files over [`MAX_FILE_BYTES`] are skipped
//! as generated or data.

use std::path::{Path, PathBuf};

use super::Language;

/// Larger source files are treated as generated and skipped.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

const SKIPPED_DIRS: &[&str] = &[
    "target",
    "node_modules",
    "__pycache__",
    "vendor",
    "dist",
    "build",
];

/// The supported source files under `root`, in a stable order, and how many supported files
/// were skipped as too large.
pub fn source_files(root: &Path) -> std::io::Result<(Vec<(PathBuf, Language)>, u64)> {
    let mut found = Vec::new();
    let mut too_large = 0;
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if !SKIPPED_DIRS.contains(&name.as_ref()) {
                    pending.push(entry.path());
                }
            } else if kind.is_file() {
                let path = entry.path();
                if let Some(lang) = Language::of(&path) {
                    if entry.metadata()?.len() <= MAX_FILE_BYTES {
                        found.push((path, lang));
                    } else {
                        too_large += 1;
                    }
                }
            }
        }
    }
    found.sort();
    Ok((found, too_large))
}
