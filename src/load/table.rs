//! The report for a human: a line on the run, the latency table per scenario and status, the
//! slowest requests and the unexpected answers with their trace ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{CellAlignment, Table};

use super::summary::Summary;

/// How many trace ids of one kind of unexpected answer the text shows; `--json` has them all.
const TRACE_IDS_SHOWN: usize = 20;

/// The report as text, ready to print.
pub fn render(summary: &Summary) -> String {
    let mut text = String::new();
    let run = &summary.run;
    let _ = writeln!(
        text,
        "{} steps, {} requests in {:.1} s ({:.1}/s) against {}, {}; mix {}",
        summary.steps,
        summary.requests,
        run.elapsed_seconds,
        summary.requests_per_second,
        run.gateway,
        run.mode,
        run.mix
    );
    if summary.max_send_lag_ms >= 10.0 {
        let _ = writeln!(
            text,
            "steps started up to {:.1} ms after they were due (every --max-in-flight slot \
             was busy, or the tool was short of CPU); the wait counts in their latency",
            summary.max_send_lag_ms
        );
    }
    let _ = writeln!(text, "restock: {}", run.restock.describe());
    text.push('\n');

    let mut table = new_table(&[
        "scenario",
        "status",
        "count",
        "unexpected",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
    ]);
    for row in &summary.rows {
        let l = &row.latency_ms;
        table.add_row(vec![
            row.scenario.to_owned(),
            row.status.clone(),
            row.count.to_string(),
            row.unexpected.to_string(),
            format!("{:.1}", l.p50),
            format!("{:.1}", l.p90),
            format!("{:.1}", l.p99),
            format!("{:.1}", l.p99_9),
            format!("{:.1}", l.max),
        ]);
    }
    align_right(&mut table, 2..9);
    let _ = writeln!(text, "{table}");
    if summary.unfinished > 0 {
        let _ = writeln!(
            text,
            "{} checkouts unfinished (409, rows \"409 unfinished\"): each lost its claim on the \
             order or ran past the saga's time limit, and the recovery sweep finishes the order \
             (see ordertrail.saga.abandoned)",
            summary.unfinished
        );
    }

    if !summary.slowest.is_empty() {
        let mut slowest = new_table(&["slowest", "scenario", "status", "trace id"]);
        for slow in &summary.slowest {
            slowest.add_row(vec![
                format!("{:.1} ms", slow.latency_ms),
                slow.scenario.to_owned(),
                slow.status.clone(),
                slow.trace_id.clone().unwrap_or_else(|| "-".to_owned()),
            ]);
        }
        align_right(&mut slowest, 0..1);
        let _ = writeln!(text, "\n{slowest}");
    }

    if let Some(logs) = &summary.logs {
        let mut table = new_table(&["log lines", "lines", "bytes", "bytes/line"]);
        let rows = logs
            .services
            .iter()
            .map(|(service, n)| (service.as_str(), n));
        for (name, appended) in rows.chain([("all services", &logs.total)]) {
            table.add_row(vec![
                name.to_owned(),
                appended.lines.to_string(),
                appended.bytes.to_string(),
                format!(
                    "{:.0}",
                    appended.bytes as f64 / appended.lines.max(1) as f64
                ),
            ]);
        }
        align_right(&mut table, 1..4);
        let _ = writeln!(
            text,
            "\n{table}\nper order ({} orders, the mix's reads included): {:.1} lines, {:.0} bytes \
             (appended to {}/*.log)",
            logs.orders, logs.lines_per_order, logs.bytes_per_order, logs.dir
        );
    }

    if summary.unexpected == 0 {
        let _ = write!(text, "\nno unexpected answer");
    } else {
        let _ = write!(
            text,
            "\n{} unexpected answers{}",
            summary.unexpected,
            unexpected_groups(summary)
        );
    }
    text
}

/// The unexpected answers grouped by scenario, status and reason, each with its trace ids.
fn unexpected_groups(summary: &Summary) -> String {
    let mut groups: BTreeMap<(&str, &str, &str), (usize, Vec<&str>)> = BTreeMap::new();
    for answer in &summary.unexpected_answers {
        let (count, ids) = groups
            .entry((answer.scenario, &answer.status, &answer.reason))
            .or_default();
        *count += 1;
        ids.extend(answer.trace_id.as_deref());
    }
    let mut text = String::new();
    for ((scenario, status, reason), (count, ids)) in groups {
        let _ = write!(text, "\n  {count} × {scenario} {status}: {reason}");
        if !ids.is_empty() {
            let shown: Vec<&str> = ids.iter().take(TRACE_IDS_SHOWN).copied().collect();
            let _ = write!(text, "\n    {}", shown.join(" "));
        }
        if ids.len() > TRACE_IDS_SHOWN {
            let _ = write!(
                text,
                " … ({} more with --json)",
                ids.len() - TRACE_IDS_SHOWN
            );
        }
        if ids.len() < count {
            let _ = write!(text, "\n    ({} without a trace id)", count - ids.len());
        }
    }
    let not_kept = summary.unexpected - summary.unexpected_answers.len() as u64;
    if not_kept > 0 {
        let _ = write!(text, "\n  and {not_kept} more, counted but not kept");
    }
    text
}

fn new_table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_style(UTF8_FULL_CONDENSED)
        .set_header(header.to_vec());
    table
}

fn align_right(table: &mut Table, columns: std::ops::Range<usize>) {
    for index in columns {
        if let Some(column) = table.column_mut(index) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}
