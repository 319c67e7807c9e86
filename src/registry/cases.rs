//! Test cases a plugin version carries: samples with the outcome the service must reach on
//! them (accepted, with the stored bytes' digest if given, or refused with these violations).
//! They run when the version is pushed, before it is bound or canaried on the replica that
//! takes the request, and on every replica before it applies the version, on that replica's
//! engine: a version that fails them is not bound and not applied.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::domain::Format;
use export_plugin_host::{LoadedPlugin, PluginHost, Violation};

/// The most test cases a version may carry.
pub const MAX_CASES: usize = 100;

/// One test case.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Its name, to report it by.
    pub name: String,
    /// The sample upload (text).
    pub input: String,
    /// Its format, as a `Content-Type` would declare it; sniffed when absent.
    #[serde(default)]
    pub from: Option<Format>,
    /// The export's format.
    pub to: Format,
    /// The binding configuration to run with.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
    /// What the service must do with the sample.
    pub expect: Expectation,
}

/// The outcome a case expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum Expectation {
    /// Stored; when `output_sha256` is given, the stored bytes have that SHA-256 (hex).
    Accepted {
        /// The stored bytes' SHA-256, hex.
        #[serde(default)]
        output_sha256: Option<String>,
    },
    /// Refused for the data. Each expected violation is compared with the violation at the
    /// same place in the answer (on the fields it gives; the answer may have more); none
    /// listed means any refusal for the data.
    Violations {
        /// The violations expected, in order.
        #[serde(default)]
        violations: Vec<ExpectedViolation>,
    },
}

/// A violation a case expects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedViolation {
    /// Its row (1-based), if it must have one.
    #[serde(default)]
    pub row: Option<u64>,
    /// Its field, if it must name one.
    #[serde(default)]
    pub field: Option<String>,
}

/// What the service did with a case's sample.
#[derive(Debug, Clone)]
pub enum CaseOutcome {
    /// Stored; the stored bytes' SHA-256, hex.
    Accepted(String),
    /// Refused for the data, with this message and these violations.
    Refused(String, Vec<Violation>),
    /// Not stored for a reason the service would not blame on the data (a trap, a deadline…).
    Failed(String),
}

/// Runs a case's sample through the upload pipeline with a plugin (implemented by the
/// delivery layer, which owns the pipeline).
pub trait CaseRunner: std::fmt::Debug + Send + Sync {
    /// What the service would do with `case`'s sample, `plugin` bound with `case`'s config.
    fn run<'a>(
        &'a self,
        host: Arc<PluginHost>,
        plugin: Arc<LoadedPlugin>,
        case: &'a TestCase,
    ) -> BoxFuture<'a, CaseOutcome>;
}

/// `Err` says how `outcome` differs from what `case` expects.
pub fn check(case: &TestCase, outcome: &CaseOutcome) -> Result<(), String> {
    let name = &case.name;
    match (&case.expect, outcome) {
        (Expectation::Accepted { output_sha256 }, CaseOutcome::Accepted(actual)) => {
            match output_sha256 {
                Some(expected) if !expected.eq_ignore_ascii_case(actual) => Err(format!(
                    "case '{name}': stored bytes have SHA-256 {actual}, expected {expected}"
                )),
                _ => Ok(()),
            }
        }
        (Expectation::Violations { violations }, CaseOutcome::Refused(message, actual)) => {
            if violations.is_empty() {
                return Ok(());
            }
            if actual.len() < violations.len() {
                return Err(format!(
                    "case '{name}': expected {} violation(s), got {}: {message}",
                    violations.len(),
                    actual.len()
                ));
            }
            for (index, (expected, got)) in violations.iter().zip(actual).enumerate() {
                let row_differs = expected.row.is_some() && expected.row != got.row;
                let field_differs = expected.field.is_some() && expected.field != got.field;
                if row_differs || field_differs {
                    return Err(format!(
                        "case '{name}': violation {} is {}, expected {}",
                        index + 1,
                        describe(got.row, got.field.as_deref()),
                        describe(expected.row, expected.field.as_deref())
                    ));
                }
            }
            Ok(())
        }
        (Expectation::Accepted { .. }, CaseOutcome::Refused(message, _)) => Err(format!(
            "case '{name}': expected accepted, refused: {message}"
        )),
        (Expectation::Violations { .. }, CaseOutcome::Accepted(_)) => Err(format!(
            "case '{name}': expected violations, the sample was accepted"
        )),
        (_, CaseOutcome::Failed(reason)) => Err(format!("case '{name}': {reason}")),
    }
}

fn describe(row: Option<u64>, field: Option<&str>) -> String {
    match (row, field) {
        (Some(row), Some(field)) => format!("row {row} field '{field}'"),
        (Some(row), None) => format!("row {row}"),
        (None, Some(field)) => format!("field '{field}'"),
        (None, None) => "any violation".into(),
    }
}

/// Runs every case; returns how each one that failed differs.
pub async fn run_all(
    runner: &dyn CaseRunner,
    host: &Arc<PluginHost>,
    plugin: &Arc<LoadedPlugin>,
    cases: &[TestCase],
) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases {
        let outcome = runner.run(host.clone(), plugin.clone(), case).await;
        if let Err(failure) = check(case, &outcome) {
            failures.push(failure);
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(expect: Expectation) -> TestCase {
        TestCase {
            name: "c".into(),
            input: String::new(),
            from: None,
            to: Format::Json,
            config: None,
            expect,
        }
    }

    fn violation(row: u64, field: &str) -> Violation {
        Violation {
            row: Some(row),
            field: Some(field.into()),
            message: "is required".into(),
        }
    }

    #[test]
    fn an_accepted_case_checks_the_digest_when_it_names_one() {
        let any = case(Expectation::Accepted {
            output_sha256: None,
        });
        assert_eq!(check(&any, &CaseOutcome::Accepted("ab".into())), Ok(()));
        let pinned = case(Expectation::Accepted {
            output_sha256: Some("AB".into()),
        });
        assert_eq!(check(&pinned, &CaseOutcome::Accepted("ab".into())), Ok(()));
        let error = check(&pinned, &CaseOutcome::Accepted("cd".into())).unwrap_err();
        assert!(error.contains("SHA-256 cd, expected AB"), "{error}");
        let error = check(&any, &CaseOutcome::Refused("bad".into(), vec![])).unwrap_err();
        assert!(error.contains("expected accepted, refused: bad"), "{error}");
    }

    #[test]
    fn a_violations_case_compares_rows_and_fields_in_order() {
        let refused = CaseOutcome::Refused(
            "rejected".into(),
            vec![violation(2, "id"), violation(5, "name")],
        );
        let expect = |violations| case(Expectation::Violations { violations });
        assert_eq!(check(&expect(vec![]), &refused), Ok(()));
        let first = ExpectedViolation {
            row: Some(2),
            field: Some("id".into()),
        };
        assert_eq!(check(&expect(vec![first.clone()]), &refused), Ok(()));
        let wrong = ExpectedViolation {
            row: Some(3),
            field: None,
        };
        let error = check(&expect(vec![wrong]), &refused).unwrap_err();
        assert!(error.contains("violation 1 is row 2 field 'id'"), "{error}");
        let three = vec![first.clone(), first.clone(), first];
        let error = check(&expect(three), &refused).unwrap_err();
        assert!(error.contains("expected 3 violation(s), got 2"), "{error}");
        let error = check(&expect(vec![]), &CaseOutcome::Accepted("x".into())).unwrap_err();
        assert!(error.contains("the sample was accepted"), "{error}");
        let error = check(&expect(vec![]), &CaseOutcome::Failed("trapped".into())).unwrap_err();
        assert!(error.contains("case 'c': trapped"), "{error}");
    }
}
