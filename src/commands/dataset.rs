//! `orion dataset export`: training data from reviewed pull requests.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use orion_services::dataset::{Format, export as write_examples};
use orion_services::store::SqlStore;

use crate::cli::{DatasetExportArgs, DatasetFormat};
use crate::settings::Settings;

/// A time given as RFC 3339 or as a UTC day (`YYYY-MM-DD`, its midnight).
fn time(name: &str, value: Option<&str>) -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(value) = value else { return Ok(None) };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(Some(t.with_timezone(&chrono::Utc)));
    }
    let day = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").with_context(|| {
        format!("--{name} {value:?} is neither an RFC 3339 time nor a day YYYY-MM-DD")
    })?;
    Ok(day.and_hms_opt(0, 0, 0).map(|t| t.and_utc()))
}

pub async fn export(args: DatasetExportArgs, mut settings: Settings) -> anyhow::Result<ExitCode> {
    let from = time("from", args.from.as_deref())?;
    let to = time("to", args.to.as_deref())?;
    super::serve::apply_data_dir(&mut settings, args.data);
    let url = settings.database_url()?;
    let store = SqlStore::connect(&url)
        .await
        .context("while opening the database")?;
    let format = match args.format {
        DatasetFormat::Chat => Format::Chat,
        DatasetFormat::Preference => Format::Preference,
    };
    let mut out: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("while creating {}", path.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let known = settings.configured_secrets();
    let exported = write_examples(&store, &known, from, to, format, &mut out).await?;
    eprintln!(
        "{} examples from {} approved pull requests ({} skipped: made before requests were recorded)",
        exported.examples, exported.pulls, exported.skipped
    );
    Ok(ExitCode::SUCCESS)
}
