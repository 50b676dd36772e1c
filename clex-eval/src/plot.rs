//! Dependency-free SVG line charts: the training curve (train loss per step, validation loss
//! per checkpoint) and evaluation curves (perplexity against length, one line per model).

const COLORS: [&str; 6] = ["steelblue", "darkorange", "seagreen", "crimson", "purple", "saddlebrown"];

/// One named line; `markers` draws dots instead of a polyline.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Dots instead of a line.
    pub markers: bool,
}

/// An SVG chart of `series` with a title and axis labels; a log2 x axis when `log_x`.
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series<'_>], log_x: bool) -> String {
    let (w, h, m) = (720.0, 400.0, 60.0);
    let fx = |x: f64| if log_x { x.max(1e-12).log2() } else { x };
    let finite = series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in finite {
        x_lo = x_lo.min(fx(*x));
        x_hi = x_hi.max(fx(*x));
        y_lo = y_lo.min(*y);
        y_hi = y_hi.max(*y);
    }
    if !x_lo.is_finite() {
        (x_lo, x_hi, y_lo, y_hi) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_hi == x_lo {
        x_hi = x_lo + 1.0;
    }
    let pad = ((y_hi - y_lo) * 0.05).max(1e-3);
    let (y_lo, y_hi) = (y_lo - pad, y_hi + pad);
    let px = |x: f64| m + (fx(x) - x_lo) / (x_hi - x_lo) * (w - 2.0 * m);
    let py = |y: f64| h - m - (y - y_lo) / (y_hi - y_lo) * (h - 2.0 * m);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"25\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">{x_label}</text>\n\
         <text x=\"5\" y=\"{ly}\">{y_label}</text>\n\
         <text x=\"5\" y=\"{m}\">{y_hi:.2}</text>\n<text x=\"5\" y=\"{b}\">{y_lo:.2}</text>\n",
        b = h - m,
        r = w - m,
        lb = h - m + 35.0,
        ly = m - 15.0,
    );
    let mut ticks: Vec<f64> = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    if ticks.len() <= 12 {
        for x in ticks {
            svg.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{x}</text>\n", px(x), h - m + 16.0));
        }
    }
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
        if s.markers {
            for (x, y) in &pts {
                svg.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>\n", px(*x), py(*y)));
            }
        } else {
            let line: Vec<String> = pts.iter().map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
            svg.push_str(&format!("<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n", line.join(" ")));
        }
        svg.push_str(&format!("<text x=\"{}\" y=\"{}\" fill=\"{color}\">{}</text>\n", w - m - 220.0, 45.0 + 15.0 * i as f64, s.name));
    }
    svg.push_str("</svg>\n");
    svg
}

/// The training curve: train loss per step and, per named validation series (e.g. at L
/// and 4L), the loss at each checkpoint.
pub fn loss_svg(train: &[(usize, f64)], valid: &[(String, Vec<(usize, f64)>)], title: &str) -> String {
    let as_f = |v: &[(usize, f64)]| v.iter().map(|(s, l)| (*s as f64, *l)).collect();
    let mut series = vec![Series { name: "train loss", points: as_f(train), markers: false }];
    series.extend(valid.iter().map(|(name, points)| Series { name, points: as_f(points), markers: true }));
    line_chart(title, "step", "loss", &series, false)
}
