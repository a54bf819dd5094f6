//! Scoring a change: the functions a diff touched, measured before and after.

use serde::{Deserialize, Serialize};

use super::function::FunctionMetrics;
use super::language::Language;
use super::report::debt;
use super::{analyze_file, walk};
use crate::vcs::FileChange;

/// A function the change added or modified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangedFunction {
    pub path: String,
    #[serde(flatten)]
    pub function: FunctionMetrics,
    /// The same function (by name) before the change; absent for a new function.
    pub before: Option<FunctionMetrics>,
    /// Cyclomatic complexity added by the change (a new function adds all but its base 1).
    pub delta_cyclomatic: i64,
    pub delta_cognitive: i64,
}

/// What the change does to complexity, as a gate reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffScore {
    pub files_changed: u64,
    /// Changed files in a supported language, measured.
    pub files_measured: u64,
    pub functions_changed: u64,
    pub new_functions: u64,
    /// Sum of the positive cyclomatic deltas.
    pub added_cyclomatic: i64,
    /// Changed functions above the debt model's cyclomatic threshold after the change.
    pub complex_functions: u64,
    /// Change of the debt model's estimate over the changed functions.
    pub debt_minutes_delta: i64,
}

/// The report of an `analyze` task restricted to `<base>..<head>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffReport {
    pub diff: String,
    pub score: DiffScore,
    /// Most added complexity first.
    pub functions: Vec<ChangedFunction>,
}

fn overlaps(f: &FunctionMetrics, ranges: &[(u32, u32)]) -> bool {
    ranges
        .iter()
        .any(|&(start, end)| f.start_line <= end && start <= f.end_line)
}

/// Measures the head and base versions of each changed file and keeps the functions whose
/// lines the change touched.
pub fn score(diff: &str, changes: &[FileChange]) -> DiffReport {
    let mut score = DiffScore {
        files_changed: changes.len() as u64,
        ..DiffScore::default()
    };
    let mut functions = Vec::new();
    for change in changes {
        let Some(language) = Language::of(std::path::Path::new(&change.path)) else {
            continue;
        };
        let Some(head) = change
            .head
            .as_deref()
            .filter(|h| walk::content_skip(h).is_none())
        else {
            continue;
        };
        score.files_measured += 1;
        let after = analyze_file(&change.path, language, head);
        let mut before: Vec<FunctionMetrics> = change
            .base
            .as_deref()
            .map(|b| analyze_file(&change.path, language, b).functions)
            .unwrap_or_default();
        for function in after
            .functions
            .into_iter()
            .filter(|f| overlaps(f, &change.added_lines))
        {
            // The same name nearest to where the function stands now (names repeat across
            // impls and classes).
            let previous = before
                .iter()
                .enumerate()
                .filter(|(_, b)| b.name == function.name)
                .min_by_key(|(_, b)| b.start_line.abs_diff(function.start_line))
                .map(|(i, _)| i)
                .map(|i| before.remove(i));
            let (delta_cyclomatic, delta_cognitive, debt_before) = match &previous {
                Some(p) => (
                    i64::from(function.cyclomatic) - i64::from(p.cyclomatic),
                    i64::from(function.cognitive) - i64::from(p.cognitive),
                    debt::of_function(p),
                ),
                None => (
                    i64::from(function.cyclomatic) - 1,
                    i64::from(function.cognitive),
                    0,
                ),
            };
            score.functions_changed += 1;
            score.new_functions += u64::from(previous.is_none());
            score.added_cyclomatic += delta_cyclomatic.max(0);
            score.complex_functions += u64::from(function.cyclomatic > debt::CYCLOMATIC_THRESHOLD);
            score.debt_minutes_delta += debt::of_function(&function) as i64 - debt_before as i64;
            functions.push(ChangedFunction {
                path: change.path.clone(),
                function,
                before: previous,
                delta_cyclomatic,
                delta_cognitive,
            });
        }
    }
    functions.sort_by(|a, b| {
        b.delta_cyclomatic
            .cmp(&a.delta_cyclomatic)
            .then_with(|| a.path.cmp(&b.path))
    });
    DiffReport {
        diff: diff.to_owned(),
        score,
        functions,
    }
}
