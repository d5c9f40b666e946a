//! Summaries of measured samples.

/// Nearest-rank percentile of `v` (sorted here), `p` in 0..=1.
pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

/// The median (nearest rank).
pub fn median(v: &[f64]) -> f64 {
    pct(v, 0.5)
}
