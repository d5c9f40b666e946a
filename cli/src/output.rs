//! What commands print: aligned columns for people, `--output json` for scripts.

use serde::Serialize;

/// How listings print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON, one document.
    Json,
}

impl Format {
    /// `table` or `json`.
    pub fn parse(v: &str) -> anyhow::Result<Format> {
        match v {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            _ => anyhow::bail!("--output {v:?}: give table or json"),
        }
    }
}

/// Prints `value` as JSON, or the rows as a table with `header`.
pub fn print<T: Serialize>(
    format: Format,
    value: &T,
    header: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Table => print!("{}", table(header, &rows())),
    }
    Ok(())
}

/// Rows in aligned columns (the last column unpadded). Control characters from the API (a
/// BMC's sensor names, event text) are shown escaped, so they cannot move the cursor.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(c);
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in &rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// `s` with its control characters escaped: text from the API (a BMC's words, a peer's
/// reason) cannot move the cursor or retitle the terminal.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// An optional value for a cell.
pub fn or_dash(v: Option<&str>) -> String {
    v.unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_control_bytes_are_escaped() {
        let t = table(
            &["ID", "NAME", "STATE"],
            &[
                vec!["s1".into(), "a".into(), "on".into()],
                vec!["s2".into(), "Lüfter".into(), "on".into()],
                vec!["server-22".into(), "x\x1b[2J".into(), "off".into()],
            ],
        );
        assert_eq!(
            t,
            "ID         NAME        STATE\ns1         a           on\ns2         Lüfter      on\nserver-22  x\\u{1b}[2J  off\n"
        );
        assert!(Format::parse("yaml").is_err());
    }
}
