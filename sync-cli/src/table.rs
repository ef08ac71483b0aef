//! Plain-text tables for terminal output: columns padded to their widest
//! cell, numbers right-aligned.

/// Renders `rows` under `headers`; a column whose cells all parse as numbers
/// (or are `-`) is right-aligned.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![true; cols];
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
            if cell != "-" && cell.replace(',', "").parse::<f64>().is_err() {
                numeric[i] = false;
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                out.push_str("  ");
            }
            if numeric[i] && i > 0 {
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i + 1 < cells.len() {
                    out.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_are_aligned() {
        let t = super::render(
            &["RELAY", "N"],
            &[
                vec!["ws://a".into(), "5".into()],
                vec!["ws://bbbb".into(), "120".into()],
            ],
        );
        assert_eq!(t, "RELAY        N\nws://a       5\nws://bbbb  120\n");
    }
}
