//! How answers are printed: tables for people, JSON or YAML for scripts (`-o`). A list is
//! always a list (`[]` when empty); errors follow the same format on stderr.

use comfy_table::{ContentArrangement, Table, presets};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// The columns a table shows: a header and the field (a JSON pointer into each item).
pub type Columns = &'static [(&'static str, &'static str)];

/// What a command answered, and how a table shows it.
pub struct Shown {
    pub value: Value,
    /// For a list: its columns. For an object: the fields to show (none: every top-level
    /// field).
    pub columns: Columns,
}

impl Shown {
    pub fn new(value: Value, columns: Columns) -> Shown {
        Shown { value, columns }
    }

    /// An answer shown field by field.
    pub fn object(value: Value) -> Shown {
        Shown {
            value,
            columns: &[],
        }
    }
}

pub fn render(format: Format, shown: &Shown) -> String {
    match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&shown.value).expect("JSON values serialize");
            s.push('\n');
            s
        }
        Format::Yaml => {
            serde_norway::to_string(&shown.value).expect("JSON values serialize as YAML")
        }
        Format::Table => table(shown),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

fn table(shown: &Shown) -> String {
    match &shown.value {
        Value::Array(items) => {
            let mut t = new_table();
            let columns: Vec<(String, String)> = if shown.columns.is_empty() {
                // No columns named: the first item's scalar fields.
                items
                    .first()
                    .and_then(Value::as_object)
                    .map(|o| {
                        o.iter()
                            .filter(|(_, v)| !v.is_object())
                            .map(|(k, _)| (k.clone(), format!("/{k}")))
                            .collect()
                    })
                    .unwrap_or_default()
            } else {
                shown
                    .columns
                    .iter()
                    .map(|(h, p)| (h.to_string(), p.to_string()))
                    .collect()
            };
            t.set_header(columns.iter().map(|(h, _)| h.as_str()));
            for item in items {
                t.add_row(columns.iter().map(|(_, p)| match item {
                    Value::Object(_) => item.pointer(p).map(cell).unwrap_or_default(),
                    scalar => cell(scalar),
                }));
            }
            format!("{t}\n")
        }
        Value::Object(o) => {
            let mut t = new_table();
            let rows: Vec<(String, String)> = if shown.columns.is_empty() {
                o.iter().map(|(k, v)| (k.clone(), cell(v))).collect()
            } else {
                shown
                    .columns
                    .iter()
                    .map(|(h, p)| {
                        (
                            h.to_string(),
                            shown.value.pointer(p).map(cell).unwrap_or_default(),
                        )
                    })
                    .collect()
            };
            for (k, v) in rows {
                t.add_row([k, v]);
            }
            format!("{t}\n")
        }
        Value::Null => String::new(),
        other => format!("{}\n", cell(other)),
    }
}
