//! Every function's metrics, for other tools: JSON, CSV (lizard's columns where they overlap)
//! and SARIF 2.1.0 (the functions over the thresholds, as code scanning reads them).

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::function::FunctionMetrics;
use super::language::Language;
use super::report::debt;

/// One function and where it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRow {
    /// Relative to the analysed root, with `/` separators.
    pub path: String,
    pub language: Language,
    #[serde(flatten)]
    pub function: FunctionMetrics,
}

/// The thresholds above which a function is a finding (SARIF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub cyclomatic: u32,
    pub cognitive: u32,
    pub nesting: u32,
}

impl Default for Thresholds {
    /// The debt model's.
    fn default() -> Self {
        Self {
            cyclomatic: debt::CYCLOMATIC_THRESHOLD,
            cognitive: debt::COGNITIVE_THRESHOLD,
            nesting: debt::NESTING_THRESHOLD,
        }
    }
}

/// The CSV header: lizard's names where the columns overlap (`CCN`, `PARAM`, `length`, `file`,
/// `function`, `start`, `end`), then Orion's own.
pub const CSV_HEADER: &str = "file,function,start,end,length,PARAM,CCN,cognitive,nesting,language";

/// A CSV field, quoted where it must be (RFC 4180). A field a spreadsheet would read as a
/// formula (`=`, `+`, `-`, `@`, a tab or a carriage return first) gets a `'` in front.
fn field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A relative path as a URI reference (SARIF §3.10): each segment percent-encoded but for
/// the characters a path segment may hold as they are.
fn uri(path: &str) -> String {
    path.split('/')
        .map(crate::uri::encode_component)
        .collect::<Vec<_>>()
        .join("/")
}

/// The rows as CSV, with [`CSV_HEADER`].
pub fn csv(rows: &[FunctionRow]) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    for r in rows {
        let f = &r.function;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            field(&r.path),
            field(&f.name),
            f.start_line,
            f.end_line,
            f.end_line + 1 - f.start_line.min(f.end_line),
            f.parameters,
            f.cyclomatic,
            f.cognitive,
            f.max_nesting,
            r.language.name(),
        ));
    }
    out
}

/// A SARIF rule: its id, the metric it names, its threshold, and how to read the metric.
type Rule = (&'static str, &'static str, u32, fn(&FunctionMetrics) -> u32);

/// The rules a SARIF log names.
fn rules(t: Thresholds) -> [Rule; 3] {
    [
        (
            "orion/cyclomatic",
            "cyclomatic complexity",
            t.cyclomatic,
            |f| f.cyclomatic,
        ),
        (
            "orion/cognitive",
            "cognitive complexity",
            t.cognitive,
            |f| f.cognitive,
        ),
        ("orion/nesting", "nesting depth", t.nesting, |f| {
            f.max_nesting
        }),
    ]
}

/// A SARIF 2.1.0 log: one result per function and metric over its threshold.
pub fn sarif(rows: &[FunctionRow], thresholds: Thresholds) -> serde_json::Value {
    let rules = rules(thresholds);
    let descriptors: Vec<_> = rules
        .iter()
        .map(|(id, what, limit, _)| {
            json!({
                "id": id,
                "name": what.replace(' ', "-"),
                "shortDescription": { "text": format!("A function's {what} is over {limit}.") },
                "fullDescription": { "text": format!(
                    "Functions whose {what} is over {limit} are hard to read and to change; \
                     extract helpers and flatten their nesting.") },
                "defaultConfiguration": { "level": "warning" },
                "properties": { "threshold": limit },
            })
        })
        .collect();
    let mut results = Vec::new();
    for r in rows {
        for (index, (id, what, limit, metric)) in rules.iter().enumerate() {
            let value = metric(&r.function);
            if value <= *limit {
                continue;
            }
            let f = &r.function;
            results.push(json!({
                "ruleId": id,
                "ruleIndex": index,
                "level": "warning",
                "message": { "text": format!("`{}` has {what} {value} (over {limit}).", f.name) },
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(&r.path), "uriBaseId": "SRCROOT" },
                        "region": { "startLine": f.start_line.max(1), "endLine": f.end_line.max(f.start_line).max(1) },
                    },
                    "logicalLocations": [{ "name": f.name, "kind": "function" }],
                }],
                "properties": { "value": value },
            }));
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "orion",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": descriptors,
            } },
            "originalUriBaseIds": { "SRCROOT": { "description": { "text": "The analysed directory." } } },
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, name: &str, cyclomatic: u32, cognitive: u32) -> FunctionRow {
        FunctionRow {
            path: path.into(),
            language: Language::Python,
            function: FunctionMetrics {
                name: name.into(),
                start_line: 3,
                end_line: 9,
                parameters: 2,
                cyclomatic,
                cognitive,
                max_nesting: 1,
            },
        }
    }

    #[test]
    fn csv_quotes_what_needs_it_and_sarif_names_what_is_over_a_threshold() {
        let rows = [
            row("a, b.py", "f", 3, 1),
            row("c.py", "g", 12, 20),
            row("=cmd.py", "h", 1, 1),
        ];
        let text = csv(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(lines[1], "\"a, b.py\",f,3,9,7,2,3,1,1,python");
        assert!(lines[3].starts_with("'=cmd.py,h,"), "{}", lines[3]);
        let log = sarif(&rows, Thresholds::default());
        let results = log["runs"][0]["results"].as_array().unwrap();
        let ids: Vec<&str> = results
            .iter()
            .map(|r| r["ruleId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["orion/cyclomatic", "orion/cognitive"]);
        assert_eq!(
            results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
            "c.py"
        );
        assert_eq!(uri("src/my file#1.py"), "src/my%20file%231.py");
        let strict = Thresholds {
            cyclomatic: 50,
            cognitive: 50,
            nesting: 50,
        };
        assert!(
            sarif(&rows, strict)["runs"][0]["results"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }
}
