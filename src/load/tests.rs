//! The report's counting and percentiles, the table and the mix, on known inputs; the
//! checker in `checker`.

use std::time::Duration;

use super::check;
use super::report::{KEPT_UNEXPECTED, Kind, Report, SLOWEST, Sample, Status};
use super::restock::RestockSummary;
use super::scenario::{Mix, Picker, Scenario};
use super::summary::{RunInfo, Summary};
use super::table;

mod checker;

fn sample(scenario: Scenario, status: Status, millis: u64, verdict: check::Verdict) -> Sample {
    Sample {
        kind: Kind::Scenario(scenario),
        status,
        latency: Duration::from_millis(millis),
        trace_id: Some(format!("{millis:032x}")),
        verdict,
    }
}

fn summary(report: &Report) -> Summary {
    report.summary(RunInfo {
        gateway: "http://127.0.0.1:8080/".into(),
        mode: "closed loop, 1 clients".into(),
        mix: Mix::default().to_string(),
        elapsed_seconds: 2.0,
        restock: RestockSummary::default(),
    })
}

/// Within the histogram's three significant digits.
fn assert_close(found: f64, expected: f64) {
    assert!(
        (found - expected).abs() <= expected * 0.001,
        "{found} is not {expected} within 0.1 %"
    );
}

#[test]
fn percentiles_of_known_latencies_are_exact_to_three_digits() {
    let mut report = Report::new();
    for millis in 1..=1000 {
        report.record(sample(
            Scenario::Captured,
            Status::Answered(201),
            millis,
            Ok(()),
        ));
    }

    let row = &summary(&report).rows[0];

    assert_eq!(
        (row.scenario, row.status.as_str(), row.count),
        ("captured", "201", 1000)
    );
    assert_close(row.latency_ms.p50, 500.0);
    assert_close(row.latency_ms.p90, 900.0);
    assert_close(row.latency_ms.p99, 990.0);
    assert_close(row.latency_ms.p99_9, 999.0);
    assert_close(row.latency_ms.max, 1000.0);
}

#[test]
fn rows_split_by_scenario_and_status_and_add_up_to_the_requests() {
    let mut report = Report::new();
    for _ in 0..5 {
        report.step(Scenario::Captured);
        report.record(sample(
            Scenario::Captured,
            Status::Answered(201),
            10,
            Ok(()),
        ));
    }
    report.step(Scenario::Captured);
    report.record(sample(
        Scenario::Captured,
        Status::NoAnswer,
        10_000,
        Err("timeout".into()),
    ));
    report.step(Scenario::Declined);
    report.record(sample(
        Scenario::Declined,
        Status::Answered(402),
        20,
        Ok(()),
    ));
    report.record(Sample {
        kind: Kind::Replay,
        ..sample(
            Scenario::Retried,
            Status::Answered(201),
            5,
            Err("differs".into()),
        )
    });

    let summary = summary(&report);

    let rows: Vec<(&str, &str, u64, u64)> = summary
        .rows
        .iter()
        .map(|r| (r.scenario, r.status.as_str(), r.count, r.unexpected))
        .collect();
    assert_eq!(
        rows,
        [
            ("captured", "201", 5, 0),
            ("captured", "no answer", 1, 1),
            ("declined", "402", 1, 0),
            ("replay", "201", 1, 1),
        ]
    );
    assert_eq!(summary.requests, 8);
    assert_eq!(
        summary.requests,
        summary.rows.iter().map(|r| r.count).sum::<u64>()
    );
    assert_eq!(summary.steps, 7);
    assert_eq!(summary.steps_by_scenario["captured"], 6);
    assert_eq!(summary.requests_per_second, 4.0);
    assert_eq!(summary.unexpected, 2);
    let reasons: Vec<(&str, &str)> = summary
        .unexpected_answers
        .iter()
        .map(|u| (u.scenario, u.reason.as_str()))
        .collect();
    assert_eq!(reasons, [("captured", "timeout"), ("replay", "differs")]);
}

#[test]
fn the_slowest_are_kept_slowest_first_with_their_trace_ids() {
    let mut report = Report::new();
    for millis in [7, 300, 1, 250, 40, 9, 12, 800, 3, 5, 66, 2, 90, 4] {
        report.record(sample(
            Scenario::Reads,
            Status::Answered(200),
            millis,
            Ok(()),
        ));
    }

    let slowest = summary(&report).slowest;

    let latencies: Vec<f64> = slowest.iter().map(|s| s.latency_ms.round()).collect();
    assert_eq!(latencies.len(), SLOWEST);
    assert_eq!(
        latencies,
        [800.0, 300.0, 250.0, 90.0, 66.0, 40.0, 12.0, 9.0, 7.0, 5.0]
    );
    assert_eq!(slowest[0].trace_id, Some(format!("{:032x}", 800)));
}

#[test]
fn unexpected_answers_beyond_the_kept_ones_are_still_counted() {
    let mut report = Report::new();
    for _ in 0..KEPT_UNEXPECTED + 5 {
        report.record(sample(
            Scenario::Reads,
            Status::Answered(500),
            1,
            Err("500".into()),
        ));
    }

    let summary = summary(&report);

    assert_eq!(summary.unexpected, KEPT_UNEXPECTED as u64 + 5);
    assert_eq!(summary.unexpected_answers.len(), KEPT_UNEXPECTED);
    assert!(table::render(&summary).contains("and 5 more, counted but not kept"));
}

#[test]
fn the_table_shows_every_row_and_the_trace_ids_of_unexpected_answers() {
    let mut report = Report::new();
    report.record(sample(
        Scenario::Captured,
        Status::Answered(201),
        12,
        Ok(()),
    ));
    report.record(sample(
        Scenario::OutOfStock,
        Status::Answered(201),
        13,
        Err("expected 409".into()),
    ));

    let text = table::render(&summary(&report));

    assert!(text.contains("out_of_stock"), "{text}");
    assert!(
        text.contains("1 × out_of_stock 201: expected 409"),
        "{text}"
    );
    assert!(text.contains(&format!("{:032x}", 13)), "{text}");
}

#[test]
fn a_mix_parses_and_prints_back_and_refuses_what_it_cannot_run() {
    let mix: Mix = "reads=1, captured=3".parse().unwrap();
    assert_eq!(mix.to_string(), "captured=3,reads=1");
    assert_eq!(mix.weight(Scenario::Declined), 0);
    assert_eq!(
        Mix::default().to_string().parse::<Mix>().unwrap(),
        Mix::default()
    );
    for bad in [
        "captured",
        "captures=1",
        "captured=-1",
        "captured=1,captured=2",
        "reads=0",
        "",
    ] {
        assert!(bad.parse::<Mix>().is_err(), "{bad} parsed");
    }
}

#[test]
fn the_picker_runs_each_scenario_its_weight_of_every_hundred_steps_interleaved() {
    let mut picker = Picker::new(&Mix::default());
    let picks: Vec<Scenario> = (0..200).map(|_| picker.next_scenario()).collect();

    for scenario in Scenario::ALL {
        let count = picks.iter().filter(|s| **s == scenario).count();
        assert_eq!(
            count as u32,
            2 * Mix::default().weight(scenario),
            "{scenario:?}"
        );
    }
    assert!(picks[..10].contains(&Scenario::Declined), "{picks:?}");
}

#[test]
fn checkouts_unfinished_are_counted_apart_and_said_under_the_table() {
    let mut report = Report::new();
    report.record(sample(
        Scenario::OutOfStock,
        Status::Answered(409),
        10,
        Ok(()),
    ));
    for scenario in [Scenario::OutOfStock, Scenario::Captured, Scenario::Captured] {
        report.record(sample(scenario, Status::Unfinished, 3000, Ok(())));
    }

    let summary = summary(&report);

    let rows: Vec<(&str, &str, u64, u64)> = summary
        .rows
        .iter()
        .map(|r| (r.scenario, r.status.as_str(), r.count, r.unexpected))
        .collect();
    assert_eq!(
        rows,
        [
            ("captured", "409 unfinished", 2, 0),
            ("out_of_stock", "409", 1, 0),
            ("out_of_stock", "409 unfinished", 1, 0),
        ]
    );
    assert_eq!((summary.unfinished, summary.unexpected), (3, 0));
    let text = table::render(&summary);
    assert!(text.contains("3 checkouts unfinished (409"), "{text}");
    assert!(text.contains("no unexpected answer"), "{text}");
    assert!(
        !table::render(&self::summary(&Report::new())).contains("unfinished"),
        "a run without one says nothing of them"
    );
}
