//! `RelativePath`: a path inside a working tree that can never leave it.

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("`{0}` is empty")]
    Empty(String),
    #[error("`{0}` is absolute; paths are relative to the repository")]
    Absolute(String),
    #[error("`{0}` climbs out of the repository with `..`")]
    Escapes(String),
    #[error("`{0}` is inside `.git`")]
    GitDirectory(String),
    #[error("`{0}` goes through a symbolic link")]
    Symlink(String),
    #[error("`{0}` contains a NUL or control character")]
    Invalid(String),
}

/// A validated relative path under a root: no absolute path, no `..`, nothing in `.git`, no
/// existing component that is a symbolic link (which could point anywhere).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelativePath {
    relative: PathBuf,
    full: PathBuf,
}

impl RelativePath {
    pub fn new(root: &Path, raw: &str) -> Result<Self, PathError> {
        let error = |f: fn(String) -> PathError| Err(f(raw.to_owned()));
        if raw.trim().is_empty() {
            return error(PathError::Empty);
        }
        if raw.chars().any(char::is_control) {
            return error(PathError::Invalid);
        }
        let path = Path::new(raw);
        let mut relative = PathBuf::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => {
                    if relative.as_os_str().is_empty() && part == ".git" {
                        return error(PathError::GitDirectory);
                    }
                    relative.push(part);
                }
                Component::CurDir => {}
                Component::ParentDir => return error(PathError::Escapes),
                Component::RootDir | Component::Prefix(_) => return error(PathError::Absolute),
            }
        }
        if relative.as_os_str().is_empty() {
            return error(PathError::Empty);
        }
        let mut walked = root.to_owned();
        for part in relative.components() {
            walked.push(part);
            if walked
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                return error(PathError::Symlink);
            }
        }
        Ok(Self {
            full: root.join(&relative),
            relative,
        })
    }

    pub fn relative(&self) -> &Path {
        &self.relative
    }

    pub fn full(&self) -> &Path {
        &self.full
    }
}
