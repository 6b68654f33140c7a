//! CSV that a spreadsheet opens without running anything: a cell that starts with `=`, `+`,
//! `-`, `@`, a tab or a carriage return is a formula to Excel, LibreOffice and Google Sheets
//! (CSV injection), so such a cell is prefixed with `'`, which they show as text. Every CSV
//! Steward writes (campaign evidence, the dashboard's inventory) goes through [`cell`].

use std::borrow::Cow;

/// `value` as a cell no spreadsheet evaluates.
pub fn cell(value: &str) -> Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{value}")),
        _ => Cow::Borrowed(value),
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formulas_become_text_and_everything_else_is_kept() {
        for f in [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(cell(f), format!("'{f}"), "{f:?}");
        }
        for keep in [
            "alice@example.com",
            "erp:orders:read",
            "",
            "a=b",
            "2026-12-07",
        ] {
            assert_eq!(cell(keep), keep);
        }
    }
}
