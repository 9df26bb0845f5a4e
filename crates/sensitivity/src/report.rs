//! Reports of an allocation: a Markdown table per layer and an SVG chart.

use std::fmt::Write;

use crate::LayerChoices;

/// A Markdown table of the layers: name, parameters, the cost of every
/// candidate (the chosen one in bold), the chosen label and its bits per
/// weight, and a total row (summed parameters, summed cost of the picks,
/// overall bits per weight).
///
/// When every layer lists the same labels in the same order, each label gets
/// its own cost column; otherwise one column lists `label: cost` pairs.
/// Pipes and backslashes in names and labels are escaped.
///
/// # Panics
/// When `picks` does not hold one in-range choice index per layer.
///
/// ```
/// use tensorpress_sensitivity::{sensitivity_table, Choice, LayerChoices};
///
/// let layer = |name: &str, c4: f64, c8: f64| {
///     LayerChoices::new(name, 100, vec![Choice::new("int4", 425.0, c4), Choice::new("int8", 825.0, c8)])
/// };
/// let table = sensitivity_table(&[layer("q", 0.5, 0.01), layer("k", 0.02, 0.001)], &[1, 0]);
/// assert!(table.starts_with("| layer | params | int4 | int8 | chosen | bits/weight |"));
/// assert!(table.contains("| q | 100 | 0.5000 | **0.01000** | int8 | 8.25 |"));
/// ```
#[track_caller]
pub fn sensitivity_table(layers: &[LayerChoices], picks: &[usize]) -> String {
    check_picks(layers, picks);
    let shared: Option<Vec<&str>> = layers.first().and_then(|first| {
        let labels: Vec<&str> = first.choices.iter().map(|c| c.label.as_str()).collect();
        layers
            .iter()
            .all(|l| {
                l.choices
                    .iter()
                    .map(|c| c.label.as_str())
                    .eq(labels.iter().copied())
            })
            .then_some(labels)
    });

    let mut out = String::from("| layer | params | ");
    match &shared {
        Some(labels) => {
            for label in labels {
                let _ = write!(out, "{} | ", md_escape(label));
            }
        }
        None => out.push_str("costs | "),
    }
    out.push_str("chosen | bits/weight |\n|---|---:|");
    let cost_columns = shared.as_ref().map_or(1, Vec::len);
    out.push_str(&"---:|".repeat(cost_columns));
    out.push_str("---|---:|\n");

    let (mut params, mut bits, mut cost) = (0u64, 0.0, 0.0);
    for (layer, &k) in layers.iter().zip(picks) {
        let chosen = &layer.choices[k];
        params += layer.params;
        bits += chosen.bits;
        cost += chosen.cost;
        let _ = write!(out, "| {} | {} | ", md_escape(&layer.name), layer.params);
        let cell = |j: usize| {
            let v = number(layer.choices[j].cost);
            if j == k {
                format!("**{v}**")
            } else {
                v
            }
        };
        if shared.is_some() {
            for j in 0..layer.choices.len() {
                let _ = write!(out, "{} | ", cell(j));
            }
        } else {
            let pairs: Vec<String> = (0..layer.choices.len())
                .map(|j| format!("{}: {}", md_escape(&layer.choices[j].label), cell(j)))
                .collect();
            let _ = write!(out, "{} | ", pairs.join(", "));
        }
        let _ = writeln!(
            out,
            "{} | {} |",
            md_escape(&chosen.label),
            per_weight(chosen.bits, layer.params)
        );
    }
    let _ = writeln!(
        out,
        "| **total** | {params} | {}Σ cost **{}** | {} |",
        " | ".repeat(cost_columns),
        number(cost),
        per_weight(bits, params)
    );
    out
}

/// A self-contained SVG chart of an allocation: one bar per layer with the
/// chosen bits per weight (left axis), and a line with dots of the chosen
/// candidate's log₁₀ sensitivity (right axis), layer names under the bars,
/// axis labels and `title`. Every text is XML-escaped; each bar carries a
/// `<title>` tooltip with the layer, label, bits per weight and cost.
///
/// Costs that are not positive and finite have no logarithm: their dots are
/// left out (the line skips them). Layers without parameters get no bar.
///
/// # Panics
/// When `picks` does not hold one in-range choice index per layer.
///
/// ```
/// use tensorpress_sensitivity::{sensitivity_svg, Choice, LayerChoices};
///
/// let layers = [LayerChoices::new("a<b>", 10, vec![Choice::new("int4", 42.5, 0.1)])];
/// let svg = sensitivity_svg(&layers, &[0], "4-bit & up");
/// assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
/// assert!(svg.contains("a&lt;b&gt;") && svg.contains("4-bit &amp; up"));
/// ```
#[track_caller]
pub fn sensitivity_svg(layers: &[LayerChoices], picks: &[usize], title: &str) -> String {
    check_picks(layers, picks);
    const LEFT: f64 = 90.0;
    const RIGHT: f64 = 70.0;
    const TOP: f64 = 50.0;
    const PLOT: f64 = 300.0;
    const SLOT: f64 = 24.0;
    const BAR: f64 = 16.0;

    let n = layers.len();
    // Names under the bars, shortened to fit (the tooltips keep them whole).
    let names: Vec<String> = layers.iter().map(|l| shorten(&l.name, 28)).collect();
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(0);
    // Rotated by 60°, about 6 px per character, plus room for the axis title.
    let bottom = 50.0 + 6.0 * 0.87 * longest as f64;
    let width = (LEFT + RIGHT + SLOT * n as f64).max(420.0);
    let height = TOP + PLOT + bottom;
    let plot_w = width - LEFT - RIGHT;
    let slot = if n == 0 { SLOT } else { plot_w / n as f64 };
    let base = TOP + PLOT;

    let bpw: Vec<Option<f64>> = layers
        .iter()
        .zip(picks)
        .map(|(l, &k)| {
            let v = l.choices[k].bits / l.params as f64;
            (v.is_finite() && v >= 0.0).then_some(v)
        })
        .collect();
    let log_cost: Vec<Option<f64>> = layers
        .iter()
        .zip(picks)
        .map(|(l, &k)| {
            let c = l.choices[k].cost;
            (c.is_finite() && c > 0.0).then(|| c.log10())
        })
        .collect();

    let bpw_max = bpw.iter().flatten().fold(0.0f64, |m, &v| m.max(v));
    let bpw_step = nice_step(bpw_max.max(1.0) / 5.0);
    let bpw_top = (bpw_max / bpw_step).ceil().max(1.0) * bpw_step;
    let y_bpw = |v: f64| base - PLOT * v / bpw_top;

    let (lo, hi) = log_cost
        .iter()
        .flatten()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let (log_lo, log_hi) = if lo.is_finite() {
        let (a, b) = (lo.floor(), hi.ceil());
        (a, if b > a { b } else { a + 1.0 })
    } else {
        (0.0, 1.0)
    };
    let y_log = |v: f64| base - PLOT * (v - log_lo) / (log_hi - log_lo);
    let x_mid = |i: usize| LEFT + slot * (i as f64 + 0.5);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    s.push_str(
        "<style>.bar{fill:#4e79a7}.line{fill:none;stroke:#e15759;stroke-width:1.5}\
         .dot,.sens{fill:#e15759}.grid{stroke:#ddd}.axis{stroke:#333}</style>\n",
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        width / 2.0,
        xml_escape(title)
    );

    // Left axis: bits per weight, with grid lines.
    let ticks = (bpw_top / bpw_step).round() as usize;
    for t in 0..=ticks {
        let v = t as f64 * bpw_step;
        let y = y_bpw(v);
        let _ = writeln!(
            s,
            r#"<line class="grid" x1="{LEFT:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            width - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    // Right axis: decades of the sensitivity.
    let decades = (log_hi - log_lo).round() as usize;
    let every = decades.div_ceil(8).max(1);
    for d in (0..=decades).step_by(every) {
        let v = log_lo + d as f64;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="sens">1e{v:.0}</text>"#,
            width - RIGHT + 6.0,
            y_log(v) + 4.0
        );
    }
    let _ = writeln!(
        s,
        r#"<line class="axis" x1="{LEFT:.1}" y1="{TOP:.1}" x2="{LEFT:.1}" y2="{base:.1}"/><line class="axis" x1="{0:.1}" y1="{TOP:.1}" x2="{0:.1}" y2="{base:.1}"/><line class="axis" x1="{LEFT:.1}" y1="{base:.1}" x2="{0:.1}" y2="{base:.1}"/>"#,
        width - RIGHT
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {0:.1}) rotate(-90)" text-anchor="middle">bits per weight</text><text transform="translate({1:.1} {0:.1}) rotate(90)" text-anchor="middle" class="sens">sensitivity of the chosen setting (log scale)</text><text x="{2:.1}" y="{3:.1}" text-anchor="middle">layer</text>"#,
        TOP + PLOT / 2.0,
        width - 18.0,
        LEFT + plot_w / 2.0,
        height - 8.0
    );

    // Bars, with a tooltip each, and the layer names under them.
    for (i, (layer, &k)) in layers.iter().zip(picks).enumerate() {
        let chosen = &layer.choices[k];
        let v = bpw[i].unwrap_or(0.0);
        let (x, y) = (x_mid(i) - BAR.min(slot * 0.8) / 2.0, y_bpw(v));
        let _ = writeln!(
            s,
            r#"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}"><title>{}: {}, {} bits/weight, cost {}</title></rect>"#,
            BAR.min(slot * 0.8),
            base - y,
            xml_escape(&layer.name),
            xml_escape(&chosen.label),
            per_weight(chosen.bits, layer.params),
            number(chosen.cost)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1} {:.1}) rotate(-60)" text-anchor="end">{}</text>"#,
            x_mid(i) + 3.0,
            base + 10.0,
            xml_escape(&names[i])
        );
    }

    // The sensitivity line, broken where a cost has no logarithm.
    let mut segment: Vec<String> = Vec::new();
    let flush = |segment: &mut Vec<String>, s: &mut String| {
        if segment.len() > 1 {
            let _ = writeln!(
                s,
                r#"<polyline class="line" points="{}"/>"#,
                segment.join(" ")
            );
        }
        segment.clear();
    };
    for (i, v) in log_cost.iter().enumerate() {
        match v {
            Some(v) => segment.push(format!("{:.1},{:.1}", x_mid(i), y_log(*v))),
            None => flush(&mut segment, &mut s),
        }
    }
    flush(&mut segment, &mut s);
    for (i, v) in log_cost.iter().enumerate() {
        if let Some(v) = v {
            let _ = writeln!(
                s,
                r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="3"/>"#,
                x_mid(i),
                y_log(*v)
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[track_caller]
fn check_picks(layers: &[LayerChoices], picks: &[usize]) {
    assert_eq!(
        picks.len(),
        layers.len(),
        "one pick per layer: {} picks for {} layers",
        picks.len(),
        layers.len()
    );
    for (l, &k) in layers.iter().zip(picks) {
        assert!(
            k < l.choices.len(),
            "pick {k} of layer `{}` is out of range: it has {} candidates",
            l.name,
            l.choices.len()
        );
    }
}

/// `s` cut to `max` characters, the last one an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// `bits / params` with two decimals, `-` without parameters.
fn per_weight(bits: f64, params: u64) -> String {
    if params == 0 {
        "-".to_string()
    } else {
        format!("{:.2}", bits / params as f64)
    }
}

/// Four significant digits, in scientific notation outside `[1e-3, 1e5)`.
fn number(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if (1e-3..1e5).contains(&a) {
        let decimals = (3 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("{v:.3e}")
    }
}

/// A tick value without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

fn md_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', " ")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newlines are not XML.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Choice;

    fn layers() -> Vec<LayerChoices> {
        let costs = [[0.9, 0.05, 0.001], [0.2, 0.01, 0.0], [4.0, 0.3, 0.02]];
        ["attn<q>&k", "mlp|up", "lm_head"]
            .iter()
            .zip(costs)
            .map(|(name, c)| {
                let choices = [2.0, 4.0, 8.0]
                    .iter()
                    .zip(c)
                    .map(|(&b, cost)| Choice::new(format!("int{b}"), 64.0 * b + 16.0, cost))
                    .collect();
                LayerChoices::new(*name, 64, choices)
            })
            .collect()
    }

    /// Checks that tags nest, entities are known and no raw `<`/`&` sits in text.
    fn assert_well_formed(svg: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            check_text(text);
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
            }
            check_text(tag);
            rest = &rest[close + 1..];
            if stack.is_empty() {
                assert!(rest.trim().is_empty(), "content after the root: {rest}");
            }
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn check_text(text: &str) {
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |j| i + j + 1)];
            assert!(
                ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity),
                "bad entity {entity}"
            );
        }
    }

    #[test]
    fn svg_has_one_bar_per_layer_and_escapes_text() {
        let ls = layers();
        let svg = sensitivity_svg(&ls, &[2, 1, 0], "bits <per> weight & \"sensitivity\"");
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert_well_formed(&svg);
        assert_eq!(svg.matches(r#"<rect class="bar""#).count(), 3);
        assert!(svg.contains("attn&lt;q&gt;&amp;k"));
        assert!(!svg.contains("attn<q>"));
        assert!(svg.contains("bits &lt;per&gt; weight &amp; &quot;sensitivity&quot;"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // Cost 0 (mlp|up at int8) has no log: two dots, no line through it...
        let svg = sensitivity_svg(&ls, &[2, 2, 0], "t");
        assert_eq!(svg.matches(r#"<circle class="dot""#).count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 0);
        // ...while three positive costs make one line of three points.
        let svg = sensitivity_svg(&ls, &[0, 0, 0], "t");
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches(r#"<circle class="dot""#).count(), 3);
        assert_well_formed(&svg);
    }

    #[test]
    fn bar_heights_follow_bits_per_weight() {
        let ls = layers();
        let svg = sensitivity_svg(&ls, &[2, 1, 0], "t");
        // 8.25, 4.25 and 2.25 bits/weight: heights in that ratio.
        let heights: Vec<f64> = svg
            .match_indices(r#"<rect class="bar""#)
            .map(|(i, _)| {
                let tag = &svg[i..i + svg[i..].find('>').unwrap()];
                let h = tag.split("height=\"").nth(1).unwrap();
                h[..h.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 3);
        assert!(
            (heights[0] / heights[2] - 8.25 / 2.25).abs() < 0.01,
            "{heights:?}"
        );
        assert!(
            (heights[1] / heights[2] - 4.25 / 2.25).abs() < 0.01,
            "{heights:?}"
        );
        // Tooltips name the choice.
        assert!(svg.contains("<title>lm_head: int2, 2.25 bits/weight, cost 4.000</title>"));
    }

    #[test]
    fn empty_and_degenerate_inputs_stay_valid() {
        let svg = sensitivity_svg(&[], &[], "");
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<rect").count(), 0);
        let zero = [LayerChoices::new(
            "z",
            0,
            vec![Choice::new("x", 0.0, f64::NAN)],
        )];
        let svg = sensitivity_svg(&zero, &[0], "t");
        assert_well_formed(&svg);
        assert!(!svg.contains("=\"NaN") && !svg.contains("inf"));
        assert!(svg.contains("<title>z: x, - bits/weight, cost NaN</title>"));
    }

    #[test]
    fn table_lists_costs_and_the_choice() {
        let ls = layers();
        let t = sensitivity_table(&ls, &[2, 1, 0]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| layer | params | int2 | int4 | int8 | chosen | bits/weight |"
        );
        assert_eq!(lines[1], "|---|---:|---:|---:|---:|---|---:|");
        assert_eq!(
            lines[2],
            "| attn<q>&k | 64 | 0.9000 | 0.05000 | **0.001000** | int8 | 8.25 |"
        );
        assert_eq!(
            lines[3],
            r"| mlp\|up | 64 | 0.2000 | **0.01000** | 0 | int4 | 4.25 |"
        );
        assert_eq!(
            lines[4],
            "| lm_head | 64 | **4.000** | 0.3000 | 0.02000 | int2 | 2.25 |"
        );
        // Total: 944 bits over 192 weights; cost 4.011.
        assert_eq!(
            lines[5],
            "| **total** | 192 |  |  |  | Σ cost **4.011** | 4.92 |"
        );
        assert_eq!(lines.len(), 6);

        // Different labels per layer: one costs column.
        let mut mixed = ls.clone();
        mixed[1].choices.truncate(2);
        let t = sensitivity_table(&mixed, &[0, 1, 2]);
        assert!(t.starts_with(
            "| layer | params | costs | chosen | bits/weight |\n|---|---:|---:|---|---:|\n"
        ));
        assert!(t.contains(r"| mlp\|up | 64 | int2: 0.2000, int4: **0.01000** | int4 | 4.25 |"));
    }

    #[test]
    #[should_panic(expected = "out of range")]
    fn table_rejects_bad_picks() {
        sensitivity_table(&layers(), &[0, 3, 0]);
    }

    #[test]
    fn numbers_and_steps() {
        assert_eq!(number(0.012345), "0.01235");
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(2.5e-7), "2.500e-7");
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(1.7), 2.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(trim(2.5), "2.5");
        assert_eq!(trim(4.0), "4");
        assert_eq!(shorten("abcdef", 6), "abcdef");
        assert_eq!(shorten("abcdefg", 6), "abcde…");
    }
}
