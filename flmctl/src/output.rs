//! Output formats of the inspection commands: borderless tables, JSON and YAML.
//!
//! What: a command builds its rows twice, as table cells and as a JSON value per row;
//! [`render`] picks one by [`Format`]. Tables use comfy-table's borderless preset, with
//! trailing spaces trimmed, like upstream flmctl.
//!
//! Caveat: the JSON and YAML shapes are flmctl's own (lower-case keys, numbers as numbers).

use comfy_table::{Table, presets};
use serde_json::Value;

/// `-o table|json|yaml`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// A borderless table.
    #[default]
    Table,
    /// Pretty JSON: an array of objects.
    Json,
    /// YAML: a sequence of mappings.
    Yaml,
}

/// Rows of one listing: table headers, table cells and the structured form of each row.
#[derive(Debug, Default)]
pub struct Rows {
    /// Column headers of the table.
    pub headers: Vec<&'static str>,
    /// Table cells, one vector per row.
    pub cells: Vec<Vec<String>>,
    /// One JSON object per row, for `-o json|yaml`.
    pub values: Vec<Value>,
}

/// `rows` in `format`, ending with a newline.
pub fn render(rows: &Rows, format: Format) -> anyhow::Result<String> {
    let values = Value::Array(rows.values.clone());
    Ok(match format {
        Format::Table => table(rows),
        Format::Json => serde_json::to_string_pretty(&values)? + "\n",
        Format::Yaml => serde_yaml_ng::to_string(&values)?,
    })
}

fn table(rows: &Rows) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(rows.headers.clone());
    for row in &rows.cells {
        table.add_row(row.clone());
    }
    let mut text = String::new();
    for line in table.to_string().lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// `-` for a missing value.
pub fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// Unix milliseconds as `HH:MM:SS` (UTC).
pub fn clock(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Bytes with a binary unit, like `1Gi`, `23.5Gi` or `100`.
pub fn bytes(value: u64) -> String {
    for (shift, unit) in [(40, "Ti"), (30, "Gi"), (20, "Mi"), (10, "Ki")] {
        let size = 1u64 << shift;
        if value >= size {
            return if value.is_multiple_of(size) {
                format!("{}{unit}", value >> shift)
            } else {
                format!("{:.1}{unit}", value as f64 / size as f64)
            };
        }
    }
    value.to_string()
}

/// Writes `text` to stdout, ignoring a closed pipe.
pub fn print(text: &str) {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_the_largest_binary_unit() {
        assert_eq!(bytes(1 << 30), "1Gi");
        assert_eq!(bytes(3 << 29), "1.5Gi");
        assert_eq!(bytes(512 << 20), "512Mi");
        assert_eq!(bytes(100), "100");
    }

    #[test]
    fn clock_is_utc_time_of_day() {
        assert_eq!(clock(0), "00:00:00");
        assert_eq!(clock((13 * 3600 + 5 * 60 + 9) * 1000 + 999), "13:05:09");
    }

    #[test]
    fn tables_are_borderless_and_trimmed() {
        let rows = Rows {
            headers: vec!["A", "Long"],
            cells: vec![vec!["x".into(), "-".into()]],
            values: vec![serde_json::json!({"a": "x"})],
        };
        let text = render(&rows, Format::Table).expect("table");
        assert_eq!(text, " A  Long\n x  -\n");
        let yaml = render(&rows, Format::Yaml).expect("yaml");
        assert_eq!(yaml, "- a: x\n");
    }
}
