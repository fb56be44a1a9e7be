//! JUnit XML of a test run (`cargo xtask test --junit FILE`), which CI
//! systems read: one test suite per base (plus `harness` for the unit tests
//! and the linters), one test case per test, failures with their message.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

/// How one test ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    /// The error, as printed, for a failed test.
    pub failure: Option<String>,
    pub time: Duration,
}

/// The suite a test belongs to: its base, or `harness`.
fn suite_of(name: &str) -> &str {
    match name.split_once('/') {
        Some((base, _)) => base,
        None => "harness",
    }
}

/// The XML for `outcomes`, suites in the order their first test ran.
pub fn xml(outcomes: &[Outcome], shard: Option<crate::test_plan::Shard>) -> Result<String> {
    let mut report = Report::new("xen-numa-harness");
    let mut suites: Vec<TestSuite> = Vec::new();
    for o in outcomes {
        let suite_name = suite_of(&o.name);
        let i = match suites.iter().position(|s| s.name.as_str() == suite_name) {
            Some(i) => i,
            None => {
                let mut suite = TestSuite::new(suite_name);
                if let Some(shard) = shard {
                    suite.add_property(("shard", shard.to_string().as_str()));
                }
                suites.push(suite);
                suites.len() - 1
            }
        };
        let status = match &o.failure {
            None => TestCaseStatus::success(),
            Some(message) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(message.lines().next().unwrap_or("failed").to_string());
                s.set_description(message.clone());
                s
            }
        };
        let mut case = TestCase::new(o.name.clone(), status);
        case.set_classname(suite_name.to_string()).set_time(o.time);
        suites[i].add_test_case(case);
    }
    report.add_test_suites(suites);
    report.to_string().context("serialising the JUnit report")
}

pub fn write(path: &Path, outcomes: &[Outcome], shard: Option<crate::test_plan::Shard>) -> Result<()> {
    crate::paths::write_atomic(path, xml(outcomes, shard)?.as_bytes())
        .with_context(|| format!("writing the JUnit report {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_cases_and_failures() {
        let outcomes = [
            Outcome { name: "unit".into(), failure: None, time: Duration::from_millis(1500) },
            Outcome { name: "master/two-node/default/patched".into(), failure: None, time: Duration::from_secs(30) },
            Outcome {
                name: "master/two-node/default/baseline".into(),
                failure: Some("the report differs from harness/snapshots/master/x.snap\n    - a\n    + b".into()),
                time: Duration::from_secs(31),
            },
        ];
        let xml = xml(&outcomes, Some("1/2".parse().unwrap())).unwrap();
        assert!(xml.contains(r#"<testsuites name="xen-numa-harness" tests="3" skipped="0" failures="1" errors="0">"#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="harness" tests="1" skipped="0" errors="0" failures="0">"#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="master" tests="2" skipped="0" errors="0" failures="1">"#), "{xml}");
        assert!(xml.contains(r#"<property name="shard" value="1/2"/>"#), "{xml}");
        assert!(xml.contains(r#"<testcase name="unit" classname="harness" time="1.500"/>"#), "{xml}");
        assert!(
            xml.contains(
                "<failure message=\"the report differs from harness/snapshots/master/x.snap\">\
                 the report differs from harness/snapshots/master/x.snap\n    - a\n    + b</failure>"
            ),
            "{xml}"
        );
    }
}
