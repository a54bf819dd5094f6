//! The edit format the Developer and the DevOps agent ask a model for, and what becomes of
//! an answer: the files it is to edit, a lone code block taken as a file, the edits checked
//! against the working tree, and written. (The format's marks and its parser are
//! `orion_services::llm::frame`'s, where the in-process model writes the frame itself.)

use orion_bus::codes;
use std::path::Path;

use orion_bus::TaskFailure;
use orion_services::llm::{ChatMessage, ChatRequest, EditFrame};
use orion_services::vcs::RelativePath;

pub use orion_services::llm::frame::{Edit, parse_edits};

/// The most files one answer may change, and the largest file it may write.
const MAX_EDITS: usize = 20;
const MAX_EDIT_BYTES: usize = 256 * 1024;
/// What the model is told about the answer's format.
pub const EDIT_FORMAT: &str = "You change code in a git repository. Answer only with edit blocks, one per file \
you change, each holding the file's complete new content:\n\n=== FILE: path/relative/to/the/repository\n<the complete new \
content of the file>\n=== END\n\nPaths are relative to the repository root. Do not write anything else.";

/// A request for edit blocks ([`EDIT_FORMAT`]) about `user`, answered deterministically;
/// a model that writes the frame itself writes one block for each of `files`.
pub(crate) fn edit_request(user: String, files: Vec<String>) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage::system(EDIT_FORMAT), ChatMessage::user(user)],
        max_tokens: Some(4096),
        temperature: Some(0.0),
        frame: (!files.is_empty()).then_some(EditFrame { files }),
    }
}

/// The files a change is about: those shown to the model (its context) whose paths the task's
/// prompt names, else the first shown (the context's best). The in-process model writes one
/// edit block for each; an endpoint's lone code block is taken as the first's content.
pub fn named_files(prompt: &str, shown: &[String]) -> Vec<String> {
    let named: Vec<String> = shown
        .iter()
        .filter(|p| prompt.contains(p.as_str()))
        .cloned()
        .collect();
    if named.is_empty() {
        shown.iter().take(1).cloned().collect()
    } else {
        named
    }
}

/// A small model often ignores the edit format and answers with one fenced code block: that
/// block is taken as the whole new content of the file the task's prompt names among those
/// shown to the model (else the first shown). `None` unless there is exactly one block.
pub fn single_block_edit(answer: &str, prompt: &str, shown: &[String]) -> Option<Edit> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in answer.lines() {
        if line.trim_start().starts_with("```") {
            match current.take() {
                Some(body) => blocks.push(body),
                None => current = Some(Vec::new()),
            }
        } else if let Some(body) = current.as_mut() {
            body.push(line);
        }
    }
    let [body] = blocks.as_slice() else {
        return None;
    };
    if current.is_some() || body.iter().all(|l| l.trim().is_empty()) {
        return None;
    }
    let path = named_files(prompt, shown).into_iter().next()?;
    let mut content = body.join("\n");
    content.push('\n');
    Some(Edit { path, content })
}

/// Checks every edit against the working tree before any is written.
pub fn validate_edits(
    root: &Path,
    edits: &[Edit],
) -> Result<Vec<(RelativePath, String)>, TaskFailure> {
    if edits.len() > MAX_EDITS {
        return Err(TaskFailure::new(
            codes::UNSAFE_EDIT,
            format!("{} files in one answer; at most {MAX_EDITS}", edits.len()),
        ));
    }
    edits
        .iter()
        .map(|e| {
            let path = RelativePath::new(root, &e.path)
                .map_err(|why| TaskFailure::new(codes::UNSAFE_EDIT, why.to_string()))?;
            if e.content.len() > MAX_EDIT_BYTES {
                return Err(TaskFailure::new(
                    codes::UNSAFE_EDIT,
                    format!("`{}` is over {MAX_EDIT_BYTES} bytes", e.path),
                ));
            }
            Ok((path, e.content.clone()))
        })
        .collect()
}

/// Refuses a whole-file edit of an existing file the model was shown only part of (cut to
/// size, or only functions of it): writing it would replace what the model did not see. A
/// file is matched by its identity on disk (device and inode), not by how its path is
/// spelled, so `./a.py`, `src//a.py`, a hard link, or another case of the name on a
/// case-insensitive file system is the same file.
pub fn refuse_partial_rewrites(
    root: &Path,
    edits: &[(RelativePath, String)],
    partial: &[String],
) -> Result<(), TaskFailure> {
    use std::os::unix::fs::MetadataExt;
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let partly_seen: Vec<(u64, u64)> = partial
        .iter()
        .filter_map(|p| identity(&root.join(p)))
        .collect();
    for (path, _) in edits {
        if identity(path.full()).is_some_and(|id| partly_seen.contains(&id)) {
            return Err(TaskFailure::new(
                codes::UNSAFE_EDIT,
                format!(
                    "`{}` was shown to the model only in part: a whole-file edit of it would replace what the model did not see",
                    path.relative().display()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes validated edits into the working tree (blocking file I/O).
pub(crate) fn write_edits(edits: &[(RelativePath, String)]) -> Result<(), TaskFailure> {
    for (path, content) in edits {
        if let Some(parent) = path.full().parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| TaskFailure::new(codes::APPLY_FAILED, e.to_string()))?;
        }
        std::fs::write(path.full(), content)
            .map_err(|e| TaskFailure::new(codes::APPLY_FAILED, e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_seen_only_in_part_is_not_rewritten_whole_however_its_path_is_spelled() {
        let root = std::env::temp_dir().join(format!("orion-partial-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/big.py"), "x = 1\n").unwrap();
        std::fs::write(root.join("src/other.py"), "y = 1\n").unwrap();
        std::fs::hard_link(root.join("src/big.py"), root.join("src/alias.py")).unwrap();
        let partial = vec!["src/big.py".to_owned()];
        let check = |path: &str| {
            let edits = validate_edits(
                &root,
                &[Edit {
                    path: path.into(),
                    content: "w = 2\n".into(),
                }],
            )
            .unwrap();
            refuse_partial_rewrites(&root, &edits, &partial)
        };
        for spelling in [
            "src/big.py",
            "./src/big.py",
            "src//big.py",
            "src/./big.py",
            "src/alias.py",
        ] {
            let refused = check(spelling).unwrap_err();
            assert_eq!(refused.code, codes::UNSAFE_EDIT, "{spelling}");
        }
        for allowed in [
            "src/other.py",
            "./src//other.py",
            "src/new.py",
            "new/dir/file.py",
        ] {
            check(allowed).unwrap_or_else(|e| panic!("{allowed}: {e:?}"));
        }
        std::fs::remove_file(root.join("src/alias.py")).unwrap();
        std::fs::remove_file(root.join("src/big.py")).unwrap();
        check("src/big.py").expect("a file no longer there is new");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn one_code_block_is_the_new_content_of_the_file_the_prompt_names() {
        let shown = vec!["app/util.py".to_owned(), "hello/__init__.py".to_owned()];
        let answer = "Sure:\n```python\ndef f():\n    return 1\n```\nDone.";
        let edit = single_block_edit(answer, "change hello/__init__.py", &shown).unwrap();
        assert_eq!(
            edit,
            Edit {
                path: "hello/__init__.py".into(),
                content: "def f():\n    return 1\n".into()
            }
        );
        assert_eq!(
            single_block_edit(answer, "make it better", &shown)
                .unwrap()
                .path,
            "app/util.py",
            "the first file shown when the prompt names none"
        );
        let two = "```\na\n```\n```\nb\n```";
        assert_eq!(
            single_block_edit(two, "", &shown),
            None,
            "two blocks: which file?"
        );
        assert_eq!(
            single_block_edit("```\na\n", "", &shown),
            None,
            "an unclosed block"
        );
        assert_eq!(single_block_edit("no code at all", "", &shown), None);
        assert_eq!(
            single_block_edit("```\n\n```", "", &shown),
            None,
            "an empty block"
        );
        assert_eq!(
            single_block_edit(answer, "", &[]),
            None,
            "no file was shown"
        );
    }
}
