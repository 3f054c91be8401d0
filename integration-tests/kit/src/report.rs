//! Figures for `docs/reliability.md`: a test that measures a situation writes
//! one table row under `target/reliability/`, and `scripts/test-reliability.sh`
//! gathers the rows into the generated table of that page.

use std::path::PathBuf;

/// One row of the generated table.
pub struct Row<'a> {
    /// File name of the row, stable across runs (the table is sorted by it).
    pub key: &'a str,
    /// What was done to the proxy.
    pub situation: &'a str,
    /// What the proxy must do.
    pub expected: &'a str,
    /// What the test measured.
    pub measured: String,
}

/// Writes the row; a failure to write is reported, never fatal to the test
/// that measured it.
pub fn record(row: &Row<'_>) {
    // The workspace's target directory, whichever crate's test is writing.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/reliability");
    let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
    let line = format!(
        "| {} | {} | {} |\n",
        cell(row.situation),
        cell(row.expected),
        cell(&row.measured)
    );
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(format!("{}.row", row.key)), line));
    if let Err(e) = written {
        eprintln!("reliability figures not written to {}: {e}", dir.display());
    }
    eprintln!("reliability: {}: {}", row.situation, row.measured);
}
