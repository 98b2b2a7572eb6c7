//! Double-double sums: a running sum kept as an unevaluated pair `hi + lo` (Knuth's two-sum,
//! fma products), so a window's sum, mean and variance stay accurate to about 1e-16 of the
//! window's own magnitude even after millions of values slid in and out, and the variance
//! does not cancel away (`Σx² - (Σx)²/n` with `x` near 1e6 and spread near 1).

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DoubleDouble {
    pub hi: f64,
    pub lo: f64,
}

#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

#[inline]
fn fast_two_sum(a: f64, b: f64) -> DoubleDouble {
    let s = a + b;
    DoubleDouble {
        hi: s,
        lo: b - (s - a),
    }
}

#[inline]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

impl DoubleDouble {
    pub const ZERO: DoubleDouble = DoubleDouble { hi: 0.0, lo: 0.0 };

    /// `x * x` exactly, as a pair.
    #[inline]
    pub fn square(x: f64) -> DoubleDouble {
        let (p, e) = two_prod(x, x);
        DoubleDouble { hi: p, lo: e }
    }

    pub fn value(self) -> f64 {
        self.hi + self.lo
    }
}

impl std::ops::Add<f64> for DoubleDouble {
    type Output = DoubleDouble;
    #[inline]
    fn add(self, x: f64) -> DoubleDouble {
        let (s, e) = two_sum(self.hi, x);
        fast_two_sum(s, e + self.lo)
    }
}

impl std::ops::Add for DoubleDouble {
    type Output = DoubleDouble;
    #[inline]
    fn add(self, x: DoubleDouble) -> DoubleDouble {
        let (s, e) = two_sum(self.hi, x.hi);
        fast_two_sum(s, e + self.lo + x.lo)
    }
}

impl std::ops::Neg for DoubleDouble {
    type Output = DoubleDouble;
    #[inline]
    fn neg(self) -> DoubleDouble {
        DoubleDouble {
            hi: -self.hi,
            lo: -self.lo,
        }
    }
}

impl std::ops::Mul for DoubleDouble {
    type Output = DoubleDouble;
    fn mul(self, x: DoubleDouble) -> DoubleDouble {
        let (p, e) = two_prod(self.hi, x.hi);
        fast_two_sum(p, e + self.hi * x.lo + self.lo * x.hi)
    }
}

impl std::ops::Div<f64> for DoubleDouble {
    type Output = DoubleDouble;
    fn div(self, d: f64) -> DoubleDouble {
        let q = self.hi / d;
        let (p, e) = two_prod(q, d);
        let r = ((self.hi - p) - e + self.lo) / d;
        fast_two_sum(q, r)
    }
}

/// Sample variance (ddof 1) from the count, sum and sum of squares; `None` below 2 values.
pub fn sample_variance(n: usize, sum: DoubleDouble, sum_sq: DoubleDouble) -> Option<f64> {
    if n < 2 {
        return None;
    }
    let n = n as f64;
    let centered = sum_sq + -(sum * sum / n);
    // Rounding can leave a zero spread a hair below zero; NaN stays NaN.
    let variance = centered.value() / (n - 1.0);
    Some(if variance < 0.0 { 0.0 } else { variance })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_sums_do_not_drift() {
        // 1e6 values slid through a 10-wide window: the remaining sum is exact.
        let values: Vec<f64> = (0..1_000_000i64)
            .map(|i| ((i * 7919) % 1000) as f64 * 0.1 + 1e8)
            .collect();
        let mut sum = DoubleDouble::ZERO;
        for (i, &v) in values.iter().enumerate() {
            sum = sum + v;
            if i >= 10 {
                sum = sum + -values[i - 10];
            }
        }
        let direct: f64 = values[values.len() - 10..].iter().sum();
        assert!((sum.value() - direct).abs() <= 1e-16 * direct * 10.0);
    }

    #[test]
    fn variance_without_cancellation() {
        let xs = [1e9 + 1.0, 1e9 + 2.0, 1e9 + 3.0, 1e9 + 4.0];
        let (mut s, mut q) = (DoubleDouble::ZERO, DoubleDouble::ZERO);
        for x in xs {
            s = s + x;
            q = q + DoubleDouble::square(x);
        }
        assert_eq!(sample_variance(4, s, q), Some(5.0 / 3.0));
        assert_eq!(sample_variance(1, s, q), None);
    }
}
