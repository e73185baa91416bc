//! The dashboard's charts, drawn server-side as inline SVG (a few rectangles and labels: no
//! chart library, no script). Colours come from classes in `console.css`, so the strict CSP
//! (no inline styles) holds. Each chart carries its figures as text too (`<title>` per bar,
//! `data-value`), for screen readers and for tests.

use maud::{Markup, html};

/// One bar: a label, its value, the CSS class that colours it.
pub struct Bar {
    pub label: String,
    pub value: i64,
    pub class: &'static str,
}

const WIDTH: i64 = 560;
const LABEL: i64 = 150;
const ROW: i64 = 24;

/// The length of `value` on a scale whose longest bar is `max` and takes `room` pixels.
fn scale(value: i64, max: i64, room: i64) -> i64 {
    if max <= 0 { 0 } else { value * room / max }
}

/// Horizontal bars, one per row, each followed by its value.
pub fn bars(testid: &str, label: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0);
    let height = ROW * bars.len().max(1) as i64 + 4;
    let room = WIDTH - LABEL - 60;
    html! {
        svg .chart role="img" aria-label=(label) data-testid=(testid)
            viewBox={ "0 0 " (WIDTH) " " (height) } width=(WIDTH) height=(height) {
            @for (i, b) in bars.iter().enumerate() {
                @let y = i as i64 * ROW + 2;
                g data-testid={ (testid) "-bar" } data-label=(b.label) data-value=(b.value) {
                    title { (b.label) ": " (b.value) }
                    text .label x=(LABEL - 6) y=(y + 16) text-anchor="end" { (b.label) }
                    rect class=(b.class) x=(LABEL) y=(y + 3) height=(ROW - 6)
                        width=(scale(b.value, max, room).max(if b.value > 0 { 2 } else { 0 })) {}
                    text .value x=(LABEL + scale(b.value, max, room) + 6) y=(y + 16) { (b.value) }
                }
            }
        }
    }
}

/// Where each part of a stacked row starts, and its width.
fn lay_out(parts: &[Bar], max: i64, room: i64) -> Vec<(i64, i64, &Bar)> {
    let mut x = LABEL;
    parts
        .iter()
        .map(|p| {
            let w = scale(p.value, max, room);
            x += w;
            (x - w, w, p)
        })
        .collect()
}

/// One row per item, its parts stacked left to right (e.g. HSM-held, Keyward-held).
pub fn stacked(testid: &str, label: &str, rows: &[(String, Vec<Bar>)]) -> Markup {
    let total = |parts: &[Bar]| parts.iter().map(|b| b.value).sum::<i64>();
    let max = rows.iter().map(|(_, p)| total(p)).max().unwrap_or(0);
    let height = ROW * rows.len().max(1) as i64 + 4;
    let room = WIDTH - LABEL - 60;
    html! {
        svg .chart role="img" aria-label=(label) data-testid=(testid)
            viewBox={ "0 0 " (WIDTH) " " (height) } width=(WIDTH) height=(height) {
            @for (i, (name, parts)) in rows.iter().enumerate() {
                @let y = i as i64 * ROW + 2;
                g data-testid={ (testid) "-row" } data-label=(name) data-value=(total(parts)) {
                    text .label x=(LABEL - 6) y=(y + 16) text-anchor="end" { (name) }
                    @for (x, w, p) in lay_out(parts, max, room) {
                        rect class=(p.class) x=(x) y=(y + 3) width=(w) height=(ROW - 6)
                            data-part=(p.label) data-value=(p.value) {
                            title { (name) ", " (p.label) ": " (p.value) }
                        }
                    }
                    text .value x=(LABEL + scale(total(parts), max, room) + 6) y=(y + 16) { (total(parts)) }
                }
            }
        }
    }
}

/// Vertical columns over time (one per day), the first and last labels under the axis.
pub fn columns(testid: &str, label: &str, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|b| b.value).max().unwrap_or(0);
    let (height, base) = (160_i64, 130_i64);
    let step = (WIDTH - 40) / bars.len().max(1) as i64;
    html! {
        svg .chart role="img" aria-label=(label) data-testid=(testid)
            viewBox={ "0 0 " (WIDTH) " " (height) } width=(WIDTH) height=(height) {
            line .axis x1="30" y1=(base) x2=(WIDTH - 5) y2=(base) {}
            text .value x="26" y="14" text-anchor="end" { (max) }
            @for (i, b) in bars.iter().enumerate() {
                @let h = scale(b.value, max, base - 20);
                @let x = 32 + i as i64 * step;
                rect class=(b.class) x=(x) y=(base - h) width=((step - 2).max(1)) height=(h)
                    data-testid={ (testid) "-bar" } data-label=(b.label) data-value=(b.value) {
                    title { (b.label) ": " (b.value) }
                }
            }
            @if let (Some(first), Some(last)) = (bars.first(), bars.last()) {
                text .label x="32" y=(base + 18) { (first.label) }
                text .label x=(WIDTH - 5) y=(base + 18) text-anchor="end" { (last.label) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_bar_fills_the_room_and_zero_draws_nothing() {
        assert_eq!(scale(10, 10, 300), 300);
        assert_eq!(scale(5, 10, 300), 150);
        assert_eq!(scale(0, 0, 300), 0);
    }

    #[test]
    fn labels_are_escaped() {
        let svg = bars(
            "t",
            "x",
            &[Bar {
                label: "<script>".into(),
                value: 1,
                class: "a",
            }],
        )
        .into_string();
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
    }
}
