//! Bar charts drawn as SVG on the server: every bar carries its label and its number as text,
//! so a chart reads without colour and without script, and a screen reader gets the same
//! numbers from the table each chart is given with.

use maud::{Markup, html};

/// One bar: its label (which says what it counts), its value, and whether it is a warning
/// (drawn hatched, so it differs from the others by more than colour).
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub warning: bool,
}

const WIDTH: u64 = 640;
const ROW: u64 = 26;
const LABEL: u64 = 170;
const NUMBER: u64 = 70;

/// A horizontal bar chart titled `title` (its accessible name), with the numbers in a table.
pub fn bars(id: &str, title: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0).max(1);
    let span = WIDTH - LABEL - NUMBER;
    let height = ROW * bars.len().max(1) as u64 + 4;
    html! {
        figure class="chart" {
            figcaption id={(id) "-title"} { (title) }
            svg xmlns="http://www.w3.org/2000/svg" role="img" aria-labelledby={(id) "-title"}
                width=(WIDTH) height=(height) viewBox={"0 0 " (WIDTH) " " (height)} {
                defs {
                    pattern id={(id) "-hatch"} width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)" {
                        rect width="6" height="6" fill="#a40e26" {}
                        line x1="0" y1="0" x2="0" y2="6" stroke="#ffffff" stroke-width="2" {}
                    }
                }
                @for (i, b) in bars.iter().enumerate() {
                    @let y = ROW * i as u64 + 2;
                    @let w = if b.value == 0 { 0 } else { (b.value * span / max).max(2) };
                    text x="0" y=(y + 17) font-size="13" fill="#1b1f24" { (b.label) }
                    rect x=(LABEL) y=(y + 3) width=(w) height=(ROW - 8)
                        fill=(if b.warning { format!("url(#{id}-hatch)") } else { "#0b5cad".to_string() }) {
                        title { (b.label) ": " (b.value) }
                    }
                    text x=(LABEL + w + 6) y=(y + 17) font-size="13" fill="#1b1f24" {
                        (b.value)
                    }
                }
            }
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "" } th scope="col" { "count" } } }
                    tbody { @for b in bars { tr { td { (b.label) } td { (b.value) } } } }
                }
            }
        }
    }
}
