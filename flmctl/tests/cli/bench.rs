//! `flmctl bench` end to end against a real three-member cluster (`flmctl local up` with its
//! node agent): JSON, CSV and table results, the histogram PNG, batch mode, failing tasks, and
//! one-line errors for bad flags and an unreachable cluster. The table is compared with
//! `tests/golden/bench_table.txt` after masking the measured figures; set `UPDATE_GOLDEN=1`
//! to rewrite it.

use crate::support::{Up, flmctl, free_base, golden, ok};
use serde_json::Value;
use std::path::Path;

/// The rows of the table whose values are measurements.
const MEASURED: [&str; 6] = ["Wall time", "Throughput", "p50", "p90", "p99", "max"];

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Asserts that every task succeeded and the figures are ordered and positive.
fn assert_all_succeeded(result: &Value, tasks: u64) {
    assert_eq!(result["succeeded"], tasks, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    assert!(result["throughput"].as_f64().unwrap() > 0.0, "{result}");
    let p = |k: &str| {
        result[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k}: {result}"))
    };
    assert!(p("p50_ms") > 0.0, "{result}");
    assert!(
        p("p50_ms") <= p("p90_ms") && p("p90_ms") <= p("p99_ms") && p("p99_ms") <= p("max_ms"),
        "{result}"
    );
}

/// The PNG decodes, has the chart's size and more than one colour.
fn assert_chart_png(path: &Path) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("the PNG exists"));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut pixels = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut pixels).expect("PNG pixels");
    assert_eq!((frame.width, frame.height), (800, 480));
    let step = frame.color_type.samples();
    let pixels = &pixels[..frame.buffer_size()];
    let first = &pixels[..step];
    assert!(
        pixels.chunks(step).any(|p| p != first),
        "the chart is one flat colour"
    );
}

fn concurrent_json_counts_every_task_and_writes_the_histogram(endpoint: &str, dir: &Path) {
    let png = dir.join("h.png");
    let png_arg = png.to_str().expect("utf-8 path");
    let args = [
        "bench",
        "-n",
        "200",
        "-c",
        "8",
        "--json",
        "--histogram",
        png_arg,
    ];
    let result = json(&ok(endpoint, &args));
    assert_all_succeeded(&result, 200);
    assert_eq!(result["mode"], "concurrent", "{result}");
    assert_eq!(result["latency"], "client", "{result}");
    assert_chart_png(&png);
}

fn csv_is_a_header_and_one_row_of_the_same_fields(endpoint: &str) {
    let text = ok(endpoint, &["bench", "-n", "20", "-c", "4", "--csv"]);
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().expect("a CSV header").clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a row")).collect();
    assert_eq!(rows.len(), 1, "{text}");
    let field = |name: &str| {
        let at = headers.iter().position(|h| h == name).expect(name);
        rows[0][at].to_owned()
    };
    assert_eq!(field("succeeded"), "20", "{text}");
    assert!(
        field("p99_ms").parse::<f64>().expect("p99_ms") > 0.0,
        "{text}"
    );
}

fn batch_mode_creates_every_task_and_reports_server_latency(endpoint: &str) {
    let args = ["bench", "-n", "300", "--batch", "100", "-c", "2", "--json"];
    let result = json(&ok(endpoint, &args));
    assert_eq!(result["mode"], "batch", "{result}");
    assert_eq!(result["batch"], 100, "{result}");
    assert_eq!(result["latency"], "server", "{result}");
    assert_eq!(result["succeeded"], 300, "{result}");
    assert_eq!(result["failed"], 0, "{result}");
    let p = |k: &str| result[k].as_f64().unwrap();
    assert!(p("p50_ms") <= p("max_ms"), "{result}");
}

fn failing_tasks_are_counted_with_their_message_not_a_crash(endpoint: &str) {
    // flmexec rejects flmping's input, so every task fails with flmexec's message.
    let args = ["bench", "-n", "3", "--app", "flmexec", "-d", "1", "--json"];
    let result = json(&ok(endpoint, &args));
    assert_eq!(result["succeeded"], 0, "{result}");
    assert_eq!(result["failed"], 3, "{result}");
    let first = result["errors"][0].as_str().expect("a failure message");
    assert!(first.contains("failed"), "{result}");
}

/// The table with the measured values masked.
fn masked_table(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let label = MEASURED.iter().find(|l| {
            line.trim_start()
                .strip_prefix(**l)
                .is_some_and(|r| r.starts_with("  "))
        });
        match label {
            Some(label) => out.push_str(&format!(" {label} <measured>\n")),
            None => out.push_str(&format!("{line}\n")),
        }
    }
    out
}

fn the_table_names_every_figure(endpoint: &str) {
    let text = ok(
        endpoint,
        &[
            "bench",
            "-n",
            "10",
            "-c",
            "2",
            "--payload",
            "4KiB",
            "-d",
            "1",
        ],
    );
    golden("bench_table.txt", &masked_table(&text));
}

#[test]
fn bench_runs_tasks_through_a_local_cluster_and_reports_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = free_base();
    let _up = Up::start(dir.path(), base);
    let endpoint = format!("http://127.0.0.1:{base},http://127.0.0.1:{}", base + 1);
    concurrent_json_counts_every_task_and_writes_the_histogram(&endpoint, dir.path());
    csv_is_a_header_and_one_row_of_the_same_fields(&endpoint);
    batch_mode_creates_every_task_and_reports_server_latency(&endpoint);
    failing_tasks_are_counted_with_their_message_not_a_crash(&endpoint);
    the_table_names_every_figure(&endpoint);
}

/// Asserts a failed run printed exactly one line, containing every `needle`.
fn assert_one_error_line(result: (bool, String, String), needles: &[&str]) {
    let (success, stdout, stderr) = result;
    assert!(!success, "it succeeded: {stdout}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle}: {stderr}");
    }
}

#[test]
fn bad_flags_and_an_absent_cluster_are_one_error_line_with_a_hint() {
    let dead = format!("http://127.0.0.1:{}", free_base() + 50);
    let bad_payload = flmctl(&dead, &["bench", "--payload", "12XB"]);
    assert_one_error_line(bad_payload, &["--payload", "12XB", "hint"]);
    let zero = flmctl(&dead, &["bench", "-c", "0"]);
    assert_one_error_line(zero, &["--concurrency"]);
    let absent = flmctl(&dead, &["bench", "-n", "1"]);
    assert_one_error_line(absent, &["no Flame member answered", "flmctl local up"]);
}
