//! Line classification: blank, comment or code.
//!
//! The rule (the one cloc and tokei use): a line with only whitespace is blank; a line whose
//! every non-whitespace byte lies inside a comment node is a comment line; any other line is
//! code. A line with code and a trailing comment is code.

use std::ops::Range;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LineCounts {
    pub total: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
}

/// Counts the lines of `source`, given the byte ranges of its comments in source order.
pub fn count(source: &[u8], comments: &[Range<usize>]) -> LineCounts {
    let mut counts = LineCounts::default();
    let mut next_comment = 0;
    let mut start = 0;
    while start < source.len() {
        let end = source[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(source.len(), |i| start + i);
        counts.total += 1;
        let mut has_text = false;
        let mut has_code = false;
        for (i, &b) in source[start..end].iter().enumerate() {
            if b.is_ascii_whitespace() {
                continue;
            }
            has_text = true;
            let at = start + i;
            while next_comment < comments.len() && comments[next_comment].end <= at {
                next_comment += 1;
            }
            let in_comment = comments.get(next_comment).is_some_and(|c| c.start <= at);
            if !in_comment {
                has_code = true;
                break;
            }
        }
        match (has_text, has_code) {
            (false, _) => counts.blank += 1,
            (true, true) => counts.code += 1,
            (true, false) => counts.comment += 1,
        }
        start = end + 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_line() {
        let src = b"// a\nfn f() {} // b\n\n   \n/* c\n d */ x\n";
        let c1 = 0..4;
        let c2 = 15..19;
        let c3 = 25..35;
        assert_eq!(&src[c3.clone()], b"/* c\n d */");
        let counts = count(src, &[c1, c2, c3]);
        assert_eq!(
            counts,
            LineCounts {
                total: 6,
                code: 2,
                comment: 2,
                blank: 2
            }
        );
    }
}
