//! A dependency-free SVG of the training curve: per-step train loss and per-checkpoint
//! validation loss against the step.

/// Writes an SVG line chart of `train` (step, loss) with `valid` (step, loss) markers.
pub fn loss_svg(train: &[(usize, f64)], valid: &[(usize, f64)], title: &str) -> String {
    let (w, h, m) = (720.0, 400.0, 50.0);
    let all = train.iter().chain(valid).filter(|(_, l)| l.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for (s, l) in all {
        x_max = x_max.max(*s as f64);
        y_min = y_min.min(*l);
        y_max = y_max.max(*l);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let (y_lo, y_hi) = (y_min - pad, y_max + pad);
    let px = |s: usize| m + (s as f64 / x_max) * (w - 2.0 * m);
    let py = |l: f64| h - m - (l - y_lo) / (y_hi - y_lo) * (h - 2.0 * m);
    let points: Vec<String> = train.iter().filter(|(_, l)| l.is_finite()).map(|(s, l)| format!("{:.1},{:.1}", px(*s), py(*l))).collect();
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{m}\" y=\"25\" font-size=\"14\">{title}</text>\n\
         <line x1=\"{m}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{r}\" y=\"{lb}\" text-anchor=\"end\">step {x_max:.0}</text>\n\
         <text x=\"5\" y=\"{m}\">{y_hi:.2}</text>\n<text x=\"5\" y=\"{b}\">{y_lo:.2}</text>\n\
         <polyline fill=\"none\" stroke=\"steelblue\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        points.join(" "),
        b = h - m,
        r = w - m,
        lb = h - m + 20.0,
    );
    for (s, l) in valid.iter().filter(|(_, l)| l.is_finite()) {
        svg.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"darkorange\"/>\n", px(*s), py(*l)));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"45\" fill=\"steelblue\">train loss</text>\n<text x=\"{}\" y=\"60\" fill=\"darkorange\">validation loss (length L)</text>\n</svg>\n",
        w - m - 170.0,
        w - m - 170.0
    ));
    svg
}
