//! A repository's report: totals, the most complex functions, hotspots, technical debt.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::export::FunctionRow;
use super::file::FileAnalysis;
use super::function::FunctionMetrics;
use super::language::Language;
use super::walk::Skip;

/// At most this many files are listed one by one in a stored report; totals cover all.
pub const MAX_LISTED_FILES: usize = 2000;
/// How many of the most complex functions a report names.
const COMPLEX_FUNCTIONS: usize = 20;
/// How many hotspots a report names.
const HOTSPOTS: usize = 10;

/// The technical-debt model, in minutes of remediation (a SQALE-style estimate, stated so it
/// can be argued with): per function, 5 per point of cyclomatic complexity above 10, 5 per
/// point of cognitive complexity above 15, 10 per nesting level above 4; 15 per TODO/FIXME.
pub mod debt {
    pub const CYCLOMATIC_THRESHOLD: u32 = 10;
    pub const COGNITIVE_THRESHOLD: u32 = 15;
    pub const NESTING_THRESHOLD: u32 = 4;

    pub fn of_function(f: &super::FunctionMetrics) -> u64 {
        u64::from(f.cyclomatic.saturating_sub(CYCLOMATIC_THRESHOLD)) * 5
            + u64::from(f.cognitive.saturating_sub(COGNITIVE_THRESHOLD)) * 5
            + u64::from(f.max_nesting.saturating_sub(NESTING_THRESHOLD)) * 10
    }

    pub const PER_TODO: u64 = 15;
}

/// Sums over the files of one language.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageTotals {
    pub files: u64,
    pub lines: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
    pub functions: u64,
    pub types: u64,
    pub imports: u64,
    pub todos: u64,
}

/// One file in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    pub path: String,
    pub language: Language,
    pub lines: u64,
    pub code: u64,
    pub comment: u64,
    pub blank: u64,
    pub functions: u64,
    pub types: u64,
    pub imports: u64,
    pub todos: u64,
    /// Sum of the cyclomatic complexity of its functions.
    pub cyclomatic: u64,
    pub max_cyclomatic: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub syntax_errors: bool,
}

/// A function among the most complex.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplexFunction {
    pub path: String,
    #[serde(flatten)]
    pub function: FunctionMetrics,
}

/// A file that is both complex and often changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hotspot {
    pub path: String,
    /// Commits that touched the file.
    pub churn: u32,
    pub cyclomatic: u64,
    /// `cyclomatic × churn`.
    pub score: u64,
}

/// Files not measured, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    pub too_large: u64,
    pub binary: u64,
    pub generated: u64,
    pub minified: u64,
    pub unreadable: u64,
}

impl SkipCounts {
    pub fn count(&mut self, skip: Skip) {
        match skip {
            Skip::TooLarge => self.too_large += 1,
            Skip::Binary => self.binary += 1,
            Skip::Generated => self.generated += 1,
            Skip::Minified => self.minified += 1,
            Skip::Unreadable => self.unreadable += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.too_large + self.binary + self.generated + self.minified + self.unreadable
    }
}

/// The headline figures, the ones a trend follows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub lines: u64,
    pub code: u64,
    pub functions: u64,
    pub todos: u64,
    pub average_cyclomatic: f64,
    pub max_cyclomatic: u32,
    /// Functions above the cyclomatic threshold of the debt model.
    pub complex_functions: u64,
    /// Estimated remediation effort (see [`debt`]).
    pub debt_minutes: u64,
    pub files_with_syntax_errors: u64,
}

/// What an analysis found in a repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RepoReport {
    pub summary: Summary,
    pub totals: BTreeMap<Language, LanguageTotals>,
    pub complex_functions: Vec<ComplexFunction>,
    #[serde(default)]
    pub hotspots: Vec<Hotspot>,
    /// The largest files first.
    pub files: Vec<FileSummary>,
    /// Whether `files` was cut to [`MAX_LISTED_FILES`].
    #[serde(default)]
    pub files_truncated: bool,
    pub skipped: SkipCounts,
    /// Follow-up `develop` tasks proposed from the evidence above.
    #[serde(default)]
    pub suggestions: Vec<Suggestion>,
    /// The functions that are hard to change (over the cognitive or nesting threshold), of
    /// which [`RepoReport::suggest`] proposes some; not stored.
    #[serde(skip)]
    hard_to_change: Vec<ComplexFunction>,
    /// Commits per path ([`RepoReport::add_hotspots`]); not stored.
    #[serde(skip)]
    churn: HashMap<String, u32>,
    /// Where every function is listed: the list the measurement stored, read a page at a time
    /// (`GET /v1/tasks/{id}/functions`). Absent where nothing was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_list: Option<FunctionList>,
    /// Every function, by path and then in the order of its file ([`RepoReport::functions`]);
    /// not stored here (they are rows of their own).
    #[serde(skip)]
    functions: Vec<FunctionRow>,
}

/// Where an analyze task's functions are stored: list `id`, of `count` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionList {
    pub id: uuid::Uuid,
    pub count: u64,
}

/// A proposed follow-up task and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    pub title: String,
    /// The prompt of the `develop` task this becomes when submitted.
    pub prompt: String,
    pub evidence: serde_json::Value,
}

/// How many suggestions a report proposes at most.
const SUGGESTIONS: usize = 5;

/// Whether a function is hard to change: over the cognitive or the nesting threshold.
fn hard_to_change(m: &FunctionMetrics) -> bool {
    m.cognitive > debt::COGNITIVE_THRESHOLD || m.max_nesting > debt::NESTING_THRESHOLD
}

impl RepoReport {
    pub fn build(analyses: Vec<FileAnalysis>, skipped: SkipCounts) -> Self {
        let mut totals = BTreeMap::<Language, LanguageTotals>::new();
        let mut summary = Summary::default();
        let mut functions: Vec<FunctionRow> = Vec::new();
        let mut cyclomatic_sum = 0u64;
        let mut files = Vec::with_capacity(analyses.len());
        for f in analyses {
            let t = totals.entry(f.language).or_default();
            t.files += 1;
            t.lines += f.lines;
            t.code += f.code;
            t.comment += f.comment;
            t.blank += f.blank;
            t.functions += f.functions.len() as u64;
            t.types += u64::from(f.types);
            t.imports += f.imports.len() as u64;
            t.todos += u64::from(f.todos);
            summary.files += 1;
            summary.lines += f.lines;
            summary.code += f.code;
            summary.functions += f.functions.len() as u64;
            summary.todos += u64::from(f.todos);
            summary.files_with_syntax_errors += u64::from(f.syntax_errors);
            summary.debt_minutes += u64::from(f.todos) * debt::PER_TODO;
            let mut file_cyclomatic = 0u64;
            let mut file_max = 0;
            for function in &f.functions {
                file_cyclomatic += u64::from(function.cyclomatic);
                file_max = file_max.max(function.cyclomatic);
                summary.debt_minutes += debt::of_function(function);
                summary.complex_functions +=
                    u64::from(function.cyclomatic > debt::CYCLOMATIC_THRESHOLD);
            }
            cyclomatic_sum += file_cyclomatic;
            summary.max_cyclomatic = summary.max_cyclomatic.max(file_max);
            files.push(FileSummary {
                path: f.path.clone(),
                language: f.language,
                lines: f.lines,
                code: f.code,
                comment: f.comment,
                blank: f.blank,
                functions: f.functions.len() as u64,
                types: u64::from(f.types),
                imports: f.imports.len() as u64,
                todos: u64::from(f.todos),
                cyclomatic: file_cyclomatic,
                max_cyclomatic: file_max,
                syntax_errors: f.syntax_errors,
            });
            functions.extend(f.functions.into_iter().map(|function| FunctionRow {
                path: f.path.clone(),
                language: f.language,
                function,
            }));
        }
        // By path; a stable sort keeps each file's own order.
        functions.sort_by(|a, b| a.path.cmp(&b.path));
        if summary.functions > 0 {
            summary.average_cyclomatic =
                (cyclomatic_sum as f64 / summary.functions as f64 * 100.0).round() / 100.0;
        }
        let complex = |row: &FunctionRow| ComplexFunction {
            path: row.path.clone(),
            function: row.function.clone(),
        };
        let hard_to_change: Vec<ComplexFunction> = functions
            .iter()
            .filter(|f| hard_to_change(&f.function))
            .map(complex)
            .collect();
        let mut ranked: Vec<&FunctionRow> = functions.iter().collect();
        ranked.sort_by(|a, b| {
            (b.function.cyclomatic, b.function.cognitive)
                .cmp(&(a.function.cyclomatic, a.function.cognitive))
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.function.start_line.cmp(&b.function.start_line))
        });
        let complex_functions = ranked
            .into_iter()
            .take(COMPLEX_FUNCTIONS)
            .map(complex)
            .collect();
        files.sort_by(|a, b| b.lines.cmp(&a.lines).then_with(|| a.path.cmp(&b.path)));
        RepoReport {
            summary,
            totals,
            complex_functions,
            hotspots: Vec::new(),
            files,
            files_truncated: false,
            skipped,
            suggestions: Vec::new(),
            hard_to_change,
            churn: HashMap::new(),
            function_list: None,
            functions,
        }
    }

    /// Every function measured, taken out of the report (by path, then in file order).
    pub fn take_functions(&mut self) -> Vec<FunctionRow> {
        std::mem::take(&mut self.functions)
    }

    /// Proposes refactorings of what makes code hard to change: functions over the cognitive
    /// or nesting threshold (branch count alone is not it: a flat dispatch table of 28 arms is
    /// easy to read), ranked by cognitive complexity weighted by churn (a hotspot's function
    /// first), then nesting, then branch count. Call after [`RepoReport::add_hotspots`].
    pub fn suggest(&mut self) {
        let churn_of = |path: &str| self.churn.get(path).copied().filter(|c| *c > 0);
        let mut candidates: Vec<&ComplexFunction> = self.hard_to_change.iter().collect();
        candidates.sort_by(|a, b| {
            let score = |f: &ComplexFunction| {
                let m = &f.function;
                let churn = churn_of(&f.path).unwrap_or(0);
                (
                    u64::from(m.cognitive) * (1 + u64::from(churn)),
                    m.max_nesting,
                    m.cyclomatic,
                )
            };
            score(b)
                .cmp(&score(a))
                .then_with(|| a.path.cmp(&b.path))
                .then_with(|| a.function.start_line.cmp(&b.function.start_line))
        });
        self.suggestions = candidates
            .into_iter()
            .take(SUGGESTIONS)
            .map(|f| {
                let m = &f.function;
                let churn = churn_of(&f.path);
                let why = match churn {
                    Some(c) => format!(" It changes often: {} changed in {c} commits.", f.path),
                    None => String::new(),
                };
                Suggestion {
                    title: format!("Simplify `{}` in {}", m.name, f.path),
                    prompt: format!(
                        "Refactor `{}` in {} (lines {}-{}) to reduce its complexity without changing its behaviour: \
                         it has cyclomatic complexity {}, cognitive complexity {} and nesting depth {}.{why} \
                         Extract well-named helpers, flatten nesting with early returns, and keep the tests passing.",
                        m.name, f.path, m.start_line, m.end_line, m.cyclomatic, m.cognitive, m.max_nesting
                    ),
                    evidence: serde_json::json!({
                        "path": f.path,
                        "function": m.name,
                        "start_line": m.start_line,
                        "cyclomatic": m.cyclomatic,
                        "cognitive": m.cognitive,
                        "max_nesting": m.max_nesting,
                        "churn": churn,
                        "debt_minutes": debt::of_function(m),
                    }),
                }
            })
            .collect();
    }

    /// Ranks files by complexity × churn (commits per path, from version control).
    pub fn add_hotspots(&mut self, churn: &HashMap<String, u32>) {
        self.churn = churn.clone();
        let mut hotspots: Vec<Hotspot> = self
            .files
            .iter()
            .filter_map(|f| {
                let churn = *churn.get(&f.path)?;
                let score = f.cyclomatic * u64::from(churn);
                (score > 0).then(|| Hotspot {
                    path: f.path.clone(),
                    churn,
                    cyclomatic: f.cyclomatic,
                    score,
                })
            })
            .collect();
        hotspots.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.path.cmp(&b.path)));
        hotspots.truncate(HOTSPOTS);
        self.hotspots = hotspots;
    }

    /// Cuts the file list to what a stored report keeps.
    pub fn trim_files(&mut self, keep: usize) {
        self.files_truncated = self.files.len() > keep;
        self.files.truncate(keep);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dispatch table of 28 arms (cyclomatic 28, cognitive 1) and a tangle of loops and
    /// conditions (cyclomatic under 28, cognitive far over the threshold).
    const SOURCE: &str = r#"
fn dispatch(code: u32) -> u32 {
    match code {
        0 => 10, 1 => 11, 2 => 12, 3 => 13, 4 => 14, 5 => 15, 6 => 16, 7 => 17, 8 => 18,
        9 => 19, 10 => 20, 11 => 21, 12 => 22, 13 => 23, 14 => 24, 15 => 25, 16 => 26,
        17 => 27, 18 => 28, 19 => 29, 20 => 30, 21 => 31, 22 => 32, 23 => 33, 24 => 34,
        25 => 35, 26 => 36, _ => 0,
    }
}

fn tangled(items: &[Vec<u32>], limit: u32) -> u32 {
    let mut total = 0;
    for row in items {
        if row.is_empty() {
            continue;
        }
        for &x in row {
            if x > limit {
                if x % 2 == 0 && x % 3 != 0 {
                    while total < limit {
                        total += 1;
                    }
                } else if x % 5 == 0 || x % 7 == 0 {
                    total += 2;
                }
            }
        }
    }
    total
}
"#;

    #[test]
    fn a_flat_dispatch_table_is_not_suggested_and_a_tangle_is() {
        let file = super::super::analyze_file("src/lib.rs", Language::Rust, SOURCE.as_bytes());
        let metric = |name: &str| {
            file.functions
                .iter()
                .find(|f| f.name == name)
                .cloned()
                .unwrap()
        };
        let (flat, tangle) = (metric("dispatch"), metric("tangled"));
        assert!(flat.cyclomatic >= 28 && flat.cognitive <= 2, "{flat:?}");
        assert!(
            tangle.cyclomatic < flat.cyclomatic && tangle.cognitive > debt::COGNITIVE_THRESHOLD,
            "{tangle:?}"
        );
        let mut report = RepoReport::build(vec![file], SkipCounts::default());
        // The most branches still lead the complexity list: that is what it lists.
        assert_eq!(report.complex_functions[0].function.name, "dispatch");
        report.suggest();
        let suggested: Vec<&str> = report
            .suggestions
            .iter()
            .map(|s| s.evidence["function"].as_str().unwrap())
            .collect();
        assert_eq!(suggested, ["tangled"]);
    }

    #[test]
    fn churn_weighs_a_suggestion_and_ties_go_by_path() {
        let file = |path: &str| super::super::analyze_file(path, Language::Rust, SOURCE.as_bytes());
        let build = || RepoReport::build(vec![file("a.rs"), file("b.rs")], SkipCounts::default());
        let first = |report: &RepoReport| report.suggestions[0].evidence["path"].clone();
        // The same function twice: the path decides, whatever the order it came in.
        let mut report = build();
        report.suggest();
        assert_eq!(first(&report), "a.rs");
        // The one in the file that changes: first, with its churn as evidence.
        let mut report = build();
        report.add_hotspots(&HashMap::from([("b.rs".to_owned(), 40)]));
        report.suggest();
        assert_eq!(first(&report), "b.rs");
        assert_eq!(report.suggestions[0].evidence["churn"], 40);
    }
}
