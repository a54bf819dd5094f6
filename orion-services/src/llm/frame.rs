//! The edit frame: the format the agents read a change in (`=== FILE: <path>` … `=== END`,
//! one block a file), written by Orion itself around a model's content where the model can
//! be steered token by token (the in-process one).
//!
//! A request names the files its answer is to edit ([`EditFrame`]). Orion writes each block's
//! header into the answer, lets the model write the content, and ends the block when the
//! model stops, writes an end mark or the closing fence of a code block, or its share of the
//! token allowance runs out. So a framed answer always parses; whether what the model wrote
//! is right is for the tests and the reviewer to say. The content stays the model's: only a
//! code fence around it, and prose before an opened fence, are taken off.

use serde::{Deserialize, Serialize};

/// What starts an edit block (followed by a space and the path) and what ends it.
pub const FILE_MARK: &str = "=== FILE:";
pub const END_MARK: &str = "=== END";

/// The files a framed answer edits, in order: one block each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditFrame {
    pub files: Vec<String>,
}

/// One file of the model's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub content: String,
}

/// Reads the edit blocks of an answer (prose around them is ignored; a code fence just
/// inside a block is taken off).
pub fn parse_edits(answer: &str) -> Result<Vec<Edit>, String> {
    let mut edits = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in answer.lines() {
        match (&mut current, line.strip_prefix(FILE_MARK)) {
            (None, Some(path)) => current = Some((path.trim().to_owned(), Vec::new())),
            (Some(_), Some(_)) => {
                return Err("an edit block starts before the previous one ended".into());
            }
            (Some((path, lines)), None) if line.trim_end() == END_MARK => {
                let mut body: &[&str] = lines;
                if body.first().is_some_and(|l| l.starts_with("```"))
                    && body.last().is_some_and(|l| l.trim() == "```")
                {
                    body = &body[1..body.len() - 1];
                }
                let mut content = body.join("\n");
                content.push('\n');
                edits.push(Edit {
                    path: std::mem::take(path),
                    content,
                });
                current = None;
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    if current.is_some() {
        return Err("an edit block has no `=== END`".into());
    }
    if edits.is_empty() {
        return Err("the answer contains no edit block".into());
    }
    Ok(edits)
}

/// How far the model is in a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    /// Nothing but blank lines (or stray marks) so far.
    Start,
    /// Plain content: the model wrote code (or prose) without a fence.
    Plain,
    /// Inside a code fence the model opened.
    Fenced,
    /// The block has ended.
    Closed,
}

/// One block's content as the model writes it, piece by piece.
#[derive(Clone, Debug)]
pub struct Block {
    part: Part,
    /// The content's whole lines so far.
    lines: Vec<String>,
    /// The line being written.
    partial: String,
}

impl Default for Block {
    fn default() -> Self {
        Self {
            part: Part::Start,
            lines: Vec::new(),
            partial: String::new(),
        }
    }
}

/// Whether a line is one of the frame's marks, which the content may not hold.
fn is_mark(line: &str) -> bool {
    line.trim_end() == END_MARK || line.starts_with(FILE_MARK)
}

impl Block {
    /// Takes the model's next piece; `true` once the block has ended (what follows the end
    /// is not read).
    pub fn push(&mut self, piece: &str) -> bool {
        for c in piece.chars() {
            if self.part == Part::Closed {
                break;
            }
            if c == '\n' {
                let line = std::mem::take(&mut self.partial);
                self.line(line);
            } else {
                self.partial.push(c);
            }
        }
        self.part == Part::Closed
    }

    fn line(&mut self, line: String) {
        let fence = line.trim_start().starts_with("```");
        match self.part {
            Part::Start if is_mark(&line) || line.trim().is_empty() => {}
            Part::Start if fence => self.part = Part::Fenced,
            Part::Start => {
                self.part = Part::Plain;
                self.lines.push(line);
            }
            Part::Plain | Part::Fenced if is_mark(&line) => self.part = Part::Closed,
            // A fence closed that was never opened ends plain content; a fence with a
            // language opens the code, and the prose before it was not the file's.
            Part::Plain if fence && line.trim() == "```" => self.part = Part::Closed,
            Part::Plain if fence => {
                self.lines.clear();
                self.part = Part::Fenced;
            }
            Part::Fenced if fence && line.trim() == "```" => self.part = Part::Closed,
            Part::Plain | Part::Fenced => self.lines.push(line),
            Part::Closed => {}
        }
    }

    /// Nothing but white space so far: the model may not stop here. (A line begun with `=`
    /// or a backquote before any content may yet be a mark or a fence, which are not content.)
    pub fn is_blank(&self) -> bool {
        let partial = self.partial.trim();
        self.lines.iter().all(|l| l.trim().is_empty())
            && (partial.is_empty()
                || (self.part == Part::Start
                    && (partial.starts_with('=') || partial.starts_with('`'))))
    }

    /// The file's new content (ending in a newline), or `None` when the model wrote none.
    pub fn content(&self) -> Option<String> {
        let mut lines = self.lines.clone();
        // A last line cut off by the allowance is content, unless it is a mark begun.
        let partial = self.partial.trim_end();
        let begun_mark = "```".starts_with(partial.trim_start())
            || END_MARK.starts_with(partial)
            || FILE_MARK.starts_with(partial)
            || is_mark(partial);
        if self.part != Part::Closed && !partial.is_empty() && !begun_mark {
            lines.push(self.partial.clone());
        }
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        if lines.iter().all(|l| l.trim().is_empty()) {
            return None;
        }
        let mut content = lines.join("\n");
        content.push('\n');
        Some(content)
    }
}

/// What a framed answer is written with: the model's side of it.
pub trait Writer {
    type Error;
    /// Text Orion writes into the answer (a block's header): the model reads it as its own.
    fn write(&mut self, text: &str) -> Result<(), Self::Error>;
    /// The model's next piece of text (one token's worth, possibly empty while a character
    /// is unfinished), or `None` when it stops. Where `may_stop` is false, the model may not
    /// stop (its end tokens are masked).
    fn next(&mut self, may_stop: bool) -> Result<Option<String>, Self::Error>;
}

/// Writes the framed answer: each file's header, then the model's content until the block
/// ends, within `allowance` pieces in all (shared out evenly over the files still to come).
/// Blocks the model wrote nothing in are left out.
pub fn fill<W: Writer>(
    frame: &EditFrame,
    writer: &mut W,
    allowance: usize,
) -> Result<String, W::Error> {
    let mut answer = String::new();
    let mut left = allowance;
    for (i, path) in frame.files.iter().enumerate() {
        let share = left / (frame.files.len() - i);
        writer.write(&format!("{FILE_MARK} {path}\n"))?;
        let mut block = Block::default();
        let mut used = 0;
        while used < share {
            let Some(piece) = writer.next(!block.is_blank())? else {
                break;
            };
            used += 1;
            if block.push(&piece) {
                break;
            }
        }
        left -= used;
        if let Some(content) = block.content() {
            answer.push_str(&format!("{FILE_MARK} {path}\n{content}{END_MARK}\n"));
        }
        writer.write(&format!("{END_MARK}\n"))?;
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model that says `pieces`, then stops (unless told it may not).
    struct Scripted {
        pieces: std::collections::VecDeque<String>,
        written: String,
    }

    impl Scripted {
        fn new(answer: &str, piece_len: usize) -> Self {
            let chars: Vec<char> = answer.chars().collect();
            Self {
                pieces: chars
                    .chunks(piece_len)
                    .map(|c| c.iter().collect())
                    .collect(),
                written: String::new(),
            }
        }
    }

    impl Writer for Scripted {
        type Error = std::convert::Infallible;
        fn write(&mut self, text: &str) -> Result<(), Self::Error> {
            self.written.push_str(text);
            Ok(())
        }
        fn next(&mut self, may_stop: bool) -> Result<Option<String>, Self::Error> {
            Ok(match self.pieces.pop_front() {
                Some(p) => Some(p),
                None if may_stop => None,
                None => Some(" ".into()),
            })
        }
    }

    fn framed(answer: &str, files: &[&str], allowance: usize) -> String {
        let frame = EditFrame {
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        // Pieces of every length from 1 to 7 characters give the same answer.
        let whole = fill(&frame, &mut Scripted::new(answer, 1), allowance).unwrap();
        for len in 2..8 {
            assert_eq!(
                fill(&frame, &mut Scripted::new(answer, len), allowance * len).unwrap(),
                whole,
                "in pieces of {len}"
            );
        }
        whole
    }

    #[test]
    fn bare_code_becomes_the_block() {
        let answer = "def farewell(name: str) -> None:\n    return f\"Goodbye, {name}!\"\n";
        assert_eq!(
            framed(answer, &["hello/__init__.py"], 1000),
            format!("=== FILE: hello/__init__.py\n{answer}=== END\n")
        );
    }

    /// The two answers SmolLM2 gave the README's develop prompt on two CPUs (bare code on
    /// one, a fenced block on the other): framed, both are an edit of the named file.
    #[test]
    fn either_answer_the_local_model_gave_is_an_edit_of_the_named_file() {
        let bare = "def farewell(name: str) -> None:\n    \"\"\"Say goodbye.\"\"\"\n    return f\"Goodbye, {name}!\"\n\nThis function says goodbye.";
        let fenced = "```python\ndef greet(name):\n    return f\"Hello, {name}!\"\n```\n";
        for answer in [bare, fenced] {
            let edits = parse_edits(&framed(answer, &["hello/__init__.py"], 1000))
                .unwrap_or_else(|why| panic!("{answer:?} does not parse: {why}"));
            assert_eq!(edits.len(), 1);
            assert_eq!(edits[0].path, "hello/__init__.py");
            assert!(
                edits[0].content.starts_with("def "),
                "{:?}",
                edits[0].content
            );
            assert!(!edits[0].content.contains("```"));
        }
    }

    #[test]
    fn a_fenced_block_loses_its_fence_and_the_prose_around_it() {
        let answer = "Here is the change:\n```python\ndef f():\n    return 1\n```\nThis adds f.\n";
        assert_eq!(
            framed(answer, &["a.py"], 1000),
            "=== FILE: a.py\ndef f():\n    return 1\n=== END\n"
        );
    }

    #[test]
    fn the_models_own_marks_end_a_block_and_are_never_content() {
        let answer = "=== FILE: a.py\nx = 1\n=== END\n=== FILE: /etc/passwd\nroot\n";
        assert_eq!(
            framed(answer, &["a.py"], 1000),
            "=== FILE: a.py\nx = 1\n=== END\n"
        );
        let closed = "x = 1\n```\nmore prose\n";
        assert_eq!(
            framed(closed, &["a.py"], 1000),
            "=== FILE: a.py\nx = 1\n=== END\n"
        );
    }

    #[test]
    fn the_allowance_ends_a_block_and_is_shared_between_files() {
        // 40 pieces of one character for two files: 20 each; a cut line is kept.
        let answer = "0123456789012345678901234567890123456789";
        let out = fill(
            &EditFrame {
                files: vec!["a".into(), "b".into()],
            },
            &mut Scripted::new(answer, 1),
            40,
        )
        .unwrap();
        assert_eq!(
            out,
            "=== FILE: a\n01234567890123456789\n=== END\n=== FILE: b\n01234567890123456789\n=== END\n"
        );
    }

    #[test]
    fn a_block_the_model_wrote_nothing_in_is_left_out() {
        // Blank lines are not content, and the model may not stop on them; when the
        // allowance runs out on them the block is dropped instead of emptying the file.
        assert_eq!(framed("\n\n  \n", &["a.py"], 4), "");
        let mut block = Block::default();
        assert!(block.is_blank());
        block.push("```py");
        assert!(block.is_blank(), "an opening fence is not content");
        block.push("thon\n");
        assert!(block.is_blank());
        block.push("x");
        assert!(!block.is_blank());
    }
}
