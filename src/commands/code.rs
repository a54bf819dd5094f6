//! `orion code`: navigation from the command line.

use crate::output::say;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::code::{CodeIntel, TreeSitterIntel};

use crate::cli::CodeCommand;

pub async fn run(command: CodeCommand) -> anyhow::Result<ExitCode> {
    let repo = match &command {
        CodeCommand::Definition { repo, .. }
        | CodeCommand::Outline { repo, .. }
        | CodeCommand::Map { repo, .. } => repo.clone(),
    };
    let index = TreeSitterIntel
        .symbols(&repo)
        .await
        .with_context(|| format!("while indexing {}", repo.display()))?;
    match command {
        CodeCommand::Definition { name, .. } => {
            let found = index.definition(&name);
            for location in &found {
                say!("{}:{} {}", location.path, location.line, location.kind);
            }
            if found.is_empty() {
                eprintln!("`{name}` is not defined in {}", repo.display());
                return Ok(ExitCode::FAILURE);
            }
        }
        CodeCommand::Outline { path, .. } => {
            for tag in index.outline(&path) {
                say!("{:>5} {} {}", tag.line, tag.kind, tag.name);
            }
        }
        CodeCommand::Map { tokens, .. } => {
            let map = index.repo_map(tokens);
            crate::output::write(format_args!("{}", map.text))?;
            eprintln!(
                "({} files, {} definitions, ~{} tokens)",
                map.files, map.definitions, map.tokens
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
