//! Code intelligence against a reference: lizard's per-function cyclomatic complexity on a
//! real body of code, the Python standard library of the machine's `python3`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use orion_services::code::{Language, Source, analyze_sources};

/// Packages and modules of the standard library compared, a few thousand functions in all.
const STDLIB_PARTS: &[&str] = &[
    "json",
    "email",
    "http",
    "logging",
    "xml/dom",
    "argparse.py",
    "difflib.py",
    "csv.py",
    "configparser.py",
    "textwrap.py",
    "pathlib.py",
    "inspect.py",
    "tarfile.py",
    "zipfile.py",
    "ast.py",
    "dataclasses.py",
    "typing.py",
    "subprocess.py",
    "shutil.py",
    "calendar.py",
];

fn stdlib() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .expect("python3 is installed");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn python_files(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for part in STDLIB_PARTS {
        let path = root.join(part);
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap().flatten() {
                let p = entry.path();
                if p.extension().is_some_and(|e| e == "py") {
                    files.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
                }
            }
        } else if path.is_file() {
            files.push(part.to_string());
        }
    }
    files.sort();
    files
}

/// lizard's verdicts: (file, start line) → cyclomatic complexity.
fn lizard(root: &Path, files: &[String]) -> HashMap<(String, u32), u32> {
    let out = Command::new("python3")
        .arg("-m")
        .arg("lizard")
        .arg("--csv")
        .args(files)
        .current_dir(root)
        .output()
        .expect("run lizard");
    assert!(
        out.status.success() || !out.stdout.is_empty(),
        "lizard failed (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut verdicts = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // NLOC,CCN,tokens,params,length,"location","file","name","long name",start,end
        let fields: Vec<&str> = line.split(',').collect();
        let n = fields.len();
        if n < 11 {
            continue;
        }
        let (Ok(ccn), Ok(start)) = (fields[1].parse::<u32>(), fields[n - 2].parse::<u32>()) else {
            continue;
        };
        let file = fields[6].trim_matches('"').to_owned();
        verdicts.insert((file, start), ccn);
    }
    verdicts
}

#[test]
fn cyclomatic_complexity_agrees_with_lizard_on_the_python_standard_library() {
    let root = stdlib();
    let files = python_files(&root);
    assert!(
        files.len() > 50,
        "found only {} standard library files under {}",
        files.len(),
        root.display()
    );
    let expected = lizard(&root, &files);
    assert!(
        expected.len() > 2000,
        "lizard measured only {} functions",
        expected.len()
    );

    let sources: Vec<Source> = files
        .iter()
        .map(|f| Source {
            path: f.clone(),
            language: Language::Python,
            bytes: std::fs::read(root.join(f)).unwrap(),
        })
        .collect();
    let ours: HashMap<(String, u32), u32> = analyze_sources(&sources, 2)
        .into_iter()
        .flat_map(|file| {
            let path = file.path.clone();
            file.functions
                .into_iter()
                .map(move |f| ((path.clone(), f.start_line), f.cyclomatic))
        })
        .collect();

    let mut matched = 0;
    let mut agree = 0;
    let mut disagreements = Vec::new();
    for (key, lizard_ccn) in &expected {
        if let Some(ccn) = ours.get(key) {
            matched += 1;
            if ccn == lizard_ccn {
                agree += 1;
            } else {
                disagreements.push(format!(
                    "{}:{} lizard {lizard_ccn} orion {ccn}",
                    key.0, key.1
                ));
            }
        }
    }
    disagreements.sort();
    let coverage = matched as f64 / expected.len() as f64;
    let agreement = agree as f64 / matched as f64;
    eprintln!(
        "lizard functions {}, matched {matched} ({:.1}%), agreement {:.2}%; first disagreements: {:#?}",
        expected.len(),
        coverage * 100.0,
        agreement * 100.0,
        &disagreements[..disagreements.len().min(15)]
    );
    assert!(
        coverage >= 0.97,
        "functions found by lizard and not by Orion: {:.1}%",
        (1.0 - coverage) * 100.0
    );
    assert!(
        agreement >= 0.98,
        "agreement {:.2}% is under 98%",
        agreement * 100.0
    );
}

/// `orion code metrics`, the command a user runs: its CSV agrees with lizard on the same
/// files, and its SARIF names exactly the functions its CSV puts over the thresholds, each at
/// a line of a file that is there.
#[test]
fn orion_code_metrics_agrees_with_lizard_and_its_sarif_names_what_is_over_the_thresholds() {
    let stdlib = stdlib();
    let files = python_files(&stdlib);
    let copy = crate::support::TempDir::new();
    for f in &files {
        let to = copy.path().join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(stdlib.join(f), &to).unwrap();
    }
    let run = |format: &str| {
        crate::support::stdout_of(
            Command::new(env!("CARGO_BIN_EXE_orion"))
                .args(["code", "metrics", "--format", format])
                .arg(copy.path()),
        )
    };
    let csv = run("csv");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some(orion_services::code::export::CSV_HEADER));
    // file,function,start,end,length,PARAM,CCN,cognitive,nesting,language
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    assert!(
        rows.iter().all(|r| r.len() == 10),
        "a row with a quoted comma"
    );
    let ours: HashMap<(String, u32), u32> = rows
        .iter()
        .map(|r| ((r[0].clone(), r[2].parse().unwrap()), r[6].parse().unwrap()))
        .collect();
    let expected = lizard(copy.path(), &files);
    let matched: Vec<_> = expected
        .iter()
        .filter(|(k, _)| ours.contains_key(*k))
        .collect();
    let agree = matched.iter().filter(|(k, v)| ours[*k] == **v).count();
    let coverage = matched.len() as f64 / expected.len() as f64;
    let agreement = agree as f64 / matched.len() as f64;
    eprintln!(
        "lizard {} functions, orion code metrics {} rows; matched {:.1}%, agreement {:.2}%",
        expected.len(),
        rows.len(),
        coverage * 100.0,
        agreement * 100.0
    );
    assert!(
        expected.len() > 2000 && coverage >= 0.97,
        "coverage {coverage}"
    );
    assert!(agreement >= 0.98, "agreement {agreement}");

    let sarif_text = run("sarif");
    // The official schema finds nothing wrong with it, and the same check rejects a log that
    // breaks it (so the check is not vacuous).
    assert_eq!(sarif_schema_errors(&sarif_text), Vec::<String>::new());
    let broken = sarif_text.replacen("\"level\": \"warning\"", "\"level\": \"severe\"", 1);
    assert_ne!(broken, sarif_text, "no result has level warning");
    let errors = sarif_schema_errors(&broken);
    assert!(
        errors.len() == 1 && errors[0].contains("'severe' is not one of"),
        "{errors:?}"
    );
    let sarif: serde_json::Value = serde_json::from_str(&sarif_text).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let run0 = &sarif["runs"][0];
    let rules: Vec<&str> = run0["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        ["orion/cyclomatic", "orion/cognitive", "orion/nesting"]
    );
    let mut found = HashSet::new();
    for result in run0["results"].as_array().unwrap() {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(result["ruleId"], rules[index]);
        let location = &result["locations"][0]["physicalLocation"];
        let uri = location["artifactLocation"]["uri"].as_str().unwrap();
        let line = location["region"]["startLine"].as_u64().unwrap();
        let text = std::fs::read_to_string(copy.path().join(uri)).unwrap();
        assert!(
            line >= 1 && line as usize <= text.lines().count(),
            "{uri}:{line}"
        );
        found.insert((uri.to_owned(), line as u32, rules[index]));
    }
    // What the CSV puts over the default thresholds (10, 15, 4), and nothing else.
    let mut over = HashSet::new();
    for r in &rows {
        let at = |rule| (r[0].clone(), r[2].parse::<u32>().unwrap(), rule);
        let n = |i: usize| r[i].parse::<u32>().unwrap();
        if n(6) > 10 {
            over.insert(at("orion/cyclomatic"));
        }
        if n(7) > 15 {
            over.insert(at("orion/cognitive"));
        }
        if n(8) > 4 {
            over.insert(at("orion/nesting"));
        }
    }
    assert!(!over.is_empty());
    assert_eq!(found, over);
}

/// What the SARIF 2.1.0 JSON schema (as the SARIF SDK ships it, fetched by scripts/tools.sh)
/// finds wrong with a log, by the `jsonschema` package's Draft 2020-12 validator.
fn sarif_schema_errors(log: &str) -> Vec<String> {
    let dir = crate::support::TempDir::new();
    let file = dir.path().join("log.sarif");
    std::fs::write(&file, log).unwrap();
    crate::support::stdout_of(
        Command::new(crate::deploy::tool("venv/bin/python"))
            .args(["-c", SARIF_CHECK])
            .arg(crate::deploy::tool("sarif/sarif-2.1.0.json"))
            .arg(&file),
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

const SARIF_CHECK: &str = r#"
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
for error in jsonschema.Draft202012Validator(schema).iter_errors(json.load(open(sys.argv[2]))):
    print("/".join(map(str, error.absolute_path)) + ": " + error.message.replace("\n", " "))
"#;

/// A name is source text: a NUL in it (past the first 8 KiB, where a file is not taken for
/// binary) comes out as U+FFFD, which any database holds.
#[test]
fn a_nul_in_a_function_name_is_replaced() {
    let mut text = format!("// {}\n", "x".repeat(9000)).into_bytes();
    text.extend_from_slice(b"const o = { \"a\0b\": function () { return 1; } };\n");
    let files = analyze_sources(
        &[Source {
            path: "o.js".into(),
            language: Language::JavaScript,
            bytes: text,
        }],
        1,
    );
    let names: Vec<&str> = files[0].functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["\"a\u{FFFD}b\""]);
}
