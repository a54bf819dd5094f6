//! Spending caps across tasks (`llm.budgets`): dollars a UTC day or month may cost, for the
//! whole deployment, for the tasks of one caller, or for the calls of one model.
//!
//! Before each model call, every cap that applies to it (its caller's, its model's, the
//! deployment's) is checked against the period's spend so far plus the call's most expensive
//! outcome, the way a task's own budget is; a call that would cross one is not made, and its
//! task pauses in `awaiting_approval` naming the cap. An operator raises the cap for the
//! current period (`POST /v1/usage/budgets/{name}`), which resumes the tasks it paused. Spend
//! is read from the recorded calls, so every node sees the same figure; calls that run at the
//! same moment may each pass the check and together cross the cap by what they cost.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{StoreError, UsageStore};

/// The length of a cap's period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    /// The start of the period `now` falls in (UTC midnight, or the first of the month).
    pub fn start(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let day = now.date_naive();
        let first = match self {
            Period::Day => day,
            Period::Month => day.with_day(1).unwrap_or(day),
        };
        Utc.from_utc_datetime(&first.and_hms_opt(0, 0, 0).unwrap_or_default())
    }

    /// The start of the next period.
    pub fn end(self, now: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.start(now);
        match self {
            Period::Day => start + chrono::Duration::days(1),
            Period::Month => start
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(start),
        }
    }

    /// The period's name: `YYYY-MM-DD` or `YYYY-MM`.
    pub fn key(self, now: DateTime<Utc>) -> String {
        match self {
            Period::Day => now.format("%Y-%m-%d").to_string(),
            Period::Month => now.format("%Y-%m").to_string(),
        }
    }
}

/// One cap, as configured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendingCap {
    /// Its name in the API and in a paused task's events.
    pub name: String,
    pub period: Period,
    /// Dollars the period may cost.
    pub usd: f64,
    /// Only the tasks this caller submitted (a token's subject, `key:<id>` for an API key).
    #[serde(default)]
    pub caller: Option<String>,
    /// Only the calls of this model (as configured: `llm.model` or an agent's).
    #[serde(default)]
    pub model: Option<String>,
}

impl SpendingCap {
    /// Whether it applies to a call for a task `caller` submitted that any of `models` may
    /// answer.
    fn applies(&self, caller: Option<&str>, models: &[String]) -> bool {
        self.caller.as_deref().is_none_or(|c| Some(c) == caller)
            && self
                .model
                .as_deref()
                .is_none_or(|m| models.iter().any(|n| n == m))
    }
}

/// Refuses caps that could not be kept: unnamed or twice named, or not a positive amount.
pub fn check_caps(caps: &[SpendingCap]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for cap in caps {
        let name = cap.name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
        {
            return Err(format!(
                "llm.budgets: {:?} is not a cap name (1 to 64 visible characters, no `/`)",
                cap.name
            ));
        }
        if !names.insert(name) {
            return Err(format!("llm.budgets: {name:?} is named twice"));
        }
        if orion_bus::check_budget(cap.usd).is_err() {
            return Err(format!("llm.budgets.{name}: usd must be a positive amount"));
        }
    }
    Ok(())
}

/// A cap as it stands in its current period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapStatus {
    pub name: String,
    pub period: Period,
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub current_period: String,
    pub resets_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The cap that holds now: the configured one, or an operator's raise for this period.
    pub usd: f64,
    pub configured_usd: f64,
    pub raised: bool,
    pub spent_usd: f64,
    /// What is left before the cap, never below 0.
    pub remaining_usd: f64,
}

/// Where each cap stands at `now`.
pub async fn status(
    caps: &[SpendingCap],
    store: &dyn UsageStore,
    now: DateTime<Utc>,
) -> Result<Vec<CapStatus>, StoreError> {
    let mut out = Vec::with_capacity(caps.len());
    for cap in caps {
        let current_period = cap.period.key(now);
        let raised = store.cap_raise(&cap.name, &current_period).await?;
        let spent = store
            .spent(
                cap.period.start(now),
                cap.caller.as_deref(),
                cap.model.as_deref(),
            )
            .await?;
        let usd = raised.unwrap_or(cap.usd);
        out.push(CapStatus {
            name: cap.name.clone(),
            period: cap.period,
            current_period,
            resets_at: cap.period.end(now),
            caller: cap.caller.clone(),
            model: cap.model.clone(),
            usd,
            configured_usd: cap.usd,
            raised: raised.is_some(),
            spent_usd: spent,
            remaining_usd: (usd - spent).max(0.0),
        });
    }
    Ok(out)
}

/// The first cap a call for a task `caller` submitted, answered by any of `models` and costing
/// at most `needed`, would cross; `None` when it crosses none.
pub async fn crossed(
    caps: &[SpendingCap],
    store: &dyn UsageStore,
    caller: Option<&str>,
    models: &[String],
    needed: f64,
    now: DateTime<Utc>,
) -> Result<Option<CapStatus>, StoreError> {
    let applying: Vec<SpendingCap> = caps
        .iter()
        .filter(|c| c.applies(caller, models))
        .cloned()
        .collect();
    Ok(status(&applying, store, now)
        .await?
        .into_iter()
        .find(|s| s.spent_usd + needed > s.usd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_and_the_first_of_the_month() {
        let now = Utc.with_ymd_and_hms(2026, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(
            Period::Day.start(now),
            Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap()
        );
        assert_eq!(
            Period::Day.end(now),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            Period::Month.start(now),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            Period::Month.end(now),
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(Period::Day.key(now), "2026-12-31");
        assert_eq!(Period::Month.key(now), "2026-12");
    }

    #[test]
    fn a_cap_applies_to_its_caller_and_model_only() {
        let cap = |caller: Option<&str>, model: Option<&str>| SpendingCap {
            name: "c".into(),
            period: Period::Day,
            usd: 1.0,
            caller: caller.map(Into::into),
            model: model.map(Into::into),
        };
        let m = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        assert!(cap(None, None).applies(None, &m(&["m"])));
        assert!(cap(Some("alice"), None).applies(Some("alice"), &m(&["m"])));
        assert!(!cap(Some("alice"), None).applies(Some("bob"), &m(&["m"])));
        assert!(!cap(Some("alice"), None).applies(None, &m(&["m"])));
        assert!(cap(None, Some("m")).applies(Some("bob"), &m(&["m"])));
        assert!(!cap(None, Some("m")).applies(Some("bob"), &m(&["m-mini"])));
        // A fallback that may answer is a model of the call.
        assert!(cap(None, Some("small")).applies(None, &m(&["big", "small"])));
    }

    #[test]
    fn caps_that_cannot_be_kept_are_refused() {
        let cap = |name: &str, usd: f64| SpendingCap {
            name: name.into(),
            period: Period::Month,
            usd,
            caller: None,
            model: None,
        };
        assert!(check_caps(&[cap("daily", 1.0), cap("monthly", 2.0)]).is_ok());
        assert!(check_caps(&[cap("daily", 1.0), cap("daily", 2.0)]).is_err());
        assert!(check_caps(&[cap("", 1.0)]).is_err());
        assert!(check_caps(&[cap("a/b", 1.0)]).is_err());
        assert!(check_caps(&[cap("x", 0.0)]).is_err());
        assert!(check_caps(&[cap("x", f64::NAN)]).is_err());
    }
}
