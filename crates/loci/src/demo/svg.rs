//! The ladder as an SVG sequence diagram: one lifeline per node, one arrow per message, the
//! virtual time on the left. Plain SVG 1.1 text, readable by browsers and image tools.

use std::fmt::Write;

use super::ladder::{handling_short, Step};

const LEFT: usize = 100;
const LANE: usize = 220;
const TOP: usize = 70;
const ROW: usize = 34;
/// Width of one character of the 11 px monospace font, for fitting labels between lanes.
const CHAR: f64 = 6.7;

/// Escapes text for XML content and attribute values.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` cut to `n` characters, with an ellipsis when cut.
pub(super) fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_string();
    }
    let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// The diagram of `steps` between `lanes` (every step's ends must be lanes).
pub fn render(title: &str, lanes: &[String], steps: &[&Step]) -> String {
    let width = LEFT + lanes.len() * LANE + 20;
    let height = TOP + (steps.len() + 1) * ROW;
    let x = |name: &str| lanes.iter().position(|l| l == name).map(|i| LEFT + i * LANE + LANE / 2);
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"#
    );
    o += r##"<style>
.life { stroke: #999; stroke-dasharray: 4 4; }
.lane { fill: #eef3fb; stroke: #4a6fa5; }
.control line { stroke: #1f4e9c; }
.data line { stroke: #2a8a3a; }
.lost line { stroke: #c0392b; stroke-dasharray: 5 3; }
.time { fill: #666; }
.note { fill: #777; font-size: 10px; }
</style>
<defs>
"##;
    for (id, color) in [("control", "#1f4e9c"), ("data", "#2a8a3a"), ("lost", "#c0392b")] {
        let _ = writeln!(
            o,
            r#"<marker id="arrow-{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#
        );
    }
    o += "</defs>\n";
    let _ = writeln!(o, r#"<rect width="{width}" height="{height}" fill="white"/>"#);
    let _ = writeln!(o, r#"<text x="10" y="20" font-size="13" font-weight="bold">{}</text>"#, esc(title));
    for (i, name) in lanes.iter().enumerate() {
        let cx = LEFT + i * LANE + LANE / 2;
        let _ = writeln!(
            o,
            r#"<rect class="lane" x="{}" y="32" width="{}" height="22" rx="4"/><text x="{cx}" y="47" text-anchor="middle" font-weight="bold">{}</text><line class="life" x1="{cx}" y1="54" x2="{cx}" y2="{}"/>"#,
            cx - LANE / 2 + 10,
            LANE - 20,
            esc(name),
            height - 10
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let (Some(x1), Some(x2)) = (x(&s.from), x(&s.to)) else { continue };
        let y = TOP + (i + 1) * ROW - 10;
        let class = if s.lost.is_some() {
            "lost"
        } else if s.is_data() {
            "data"
        } else {
            "control"
        };
        let span = x1.abs_diff(x2).max(LANE);
        let room = ((span as f64 - 10.0) / CHAR) as usize;
        let mid = (x1 + x2) / 2;
        // Arrows stop short of the lifeline so the head stays visible.
        let x2_end = if x2 > x1 { x2 - 2 } else { x2 + 2 };
        let _ = write!(
            o,
            r#"<g class="msg {class}"><title>{}</title><text class="time" x="8" y="{}">{:.3} ms</text><line x1="{x1}" y1="{y}" x2="{x2_end}" y2="{y}" marker-end="url(#arrow-{class})"/><text x="{mid}" y="{}" text-anchor="middle">{}</text>"#,
            esc(&s.to_string()),
            y + 4,
            s.sent.as_secs_f64() * 1e3,
            y - 4,
            esc(&fit(&s.label, room)),
        );
        let note = match (s.handling, s.lost) {
            (_, Some(l)) => Some(l.to_string()),
            (Some(h), _) => Some(format!("{}: {}", s.to, handling_short(h))),
            _ => None,
        };
        if let Some(n) = note {
            let _ = write!(
                o,
                r#"<text class="note" x="{mid}" y="{}" text-anchor="middle">{}</text>"#,
                y + 12,
                esc(&fit(&n, room))
            );
        }
        o += "</g>\n";
    }
    o += "</svg>\n";
    o
}
