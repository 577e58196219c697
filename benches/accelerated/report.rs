//! The report: its rows, printed as a Markdown table, and its JSON.

use serde_json::Value;

pub struct Report {
    pub rows: Vec<[String; 3]>,
    pub json: Value,
}

impl Report {
    pub fn row(&mut self, metric: &str, value: String, note: String) {
        eprintln!("accelerated bench: {metric}: {value} ({note})");
        self.rows.push([metric.to_string(), value, note]);
    }

    pub fn print(&self) {
        println!("| measure | value | notes |");
        println!("|---|---:|---|");
        for [m, v, n] in &self.rows {
            println!("| {m} | {v} | {n} |");
        }
    }
}
