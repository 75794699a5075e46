//! The little dense linear algebra the Bayesian algorithms need: square symmetric matrices of a
//! few dozen rows at most, their Cholesky factors, solves and inverses. Written out here rather
//! than taken from a numerics crate: the sizes are tiny, and a replayed decision must compute
//! bit for bit what the original one did, which is easiest to promise for code that never
//! changes under us.

/// A square matrix stored row by row.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    n: usize,
    data: Vec<f64>,
}

impl Matrix {
    /// The n×n zero matrix.
    pub fn zeros(n: usize) -> Self {
        Self {
            n,
            data: vec![0.0; n * n],
        }
    }

    /// `scale` times the n×n identity.
    pub fn scaled_identity(n: usize, scale: f64) -> Self {
        let mut m = Self::zeros(n);
        for i in 0..n {
            m.set(i, i, scale);
        }
        m
    }

    /// The matrix with these rows, or `None` when a row's length is not the number of rows.
    pub fn from_rows(rows: &[Vec<f64>]) -> Option<Self> {
        let n = rows.len();
        if rows.iter().any(|row| row.len() != n) {
            return None;
        }
        Some(Self {
            n,
            data: rows.iter().flatten().copied().collect(),
        })
    }

    /// The number of rows (and columns).
    pub fn size(&self) -> usize {
        self.n
    }

    /// The element in row `i`, column `j`.
    pub fn get(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    /// Sets the element in row `i`, column `j`.
    pub fn set(&mut self, i: usize, j: usize, value: f64) {
        self.data[i * self.n + j] = value;
    }

    /// The rows, as nested vectors (the JSON shape of a matrix).
    pub fn rows(&self) -> Vec<Vec<f64>> {
        self.data
            .chunks(self.n.max(1))
            .map(<[f64]>::to_vec)
            .collect()
    }

    /// The square block of `len` rows and columns starting at row and column `from`.
    pub fn block(&self, from: usize, len: usize) -> Self {
        let mut b = Self::zeros(len);
        for i in 0..len {
            for j in 0..len {
                b.set(i, j, self.get(from + i, from + j));
            }
        }
        b
    }

    /// Whether every element is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }

    /// The first pair (i, j), i < j, whose elements differ by more than `rel` relative to the
    /// larger of the two and the geometric mean of their diagonal elements, if any.
    pub fn asymmetry(&self, rel: f64) -> Option<(usize, usize)> {
        for i in 0..self.n {
            for j in (i + 1)..self.n {
                let (a, b) = (self.get(i, j), self.get(j, i));
                let scale = a
                    .abs()
                    .max(b.abs())
                    .max((self.get(i, i) * self.get(j, j)).abs().sqrt());
                if (a - b).abs() > rel * scale {
                    return Some((i, j));
                }
            }
        }
        None
    }

    /// Adds `scale · v v'` (a rank-one update).
    pub fn add_outer(&mut self, v: &[f64], scale: f64) {
        for (i, vi) in v.iter().enumerate() {
            let row = &mut self.data[i * self.n..(i + 1) * self.n];
            for (cell, vj) in row.iter_mut().zip(v) {
                *cell += scale * vi * vj;
            }
        }
    }

    /// `self + scale · other`, element by element.
    pub fn plus_scaled(&self, other: &Self, scale: f64) -> Self {
        Self {
            n: self.n,
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| a + scale * b)
                .collect(),
        }
    }

    /// The product `self · v`.
    pub fn mul_vec(&self, v: &[f64]) -> Vec<f64> {
        self.data
            .chunks(self.n.max(1))
            .map(|row| dot(row, v))
            .collect()
    }

    /// The quadratic form `v' self v`.
    pub fn quadratic_form(&self, v: &[f64]) -> f64 {
        dot(v, &self.mul_vec(v))
    }
}

/// The dot product of two vectors of the same length.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The lower-triangular Cholesky factor L of a symmetric positive-definite matrix (A = L L').
/// Reads only the lower triangle of A.
#[derive(Debug, Clone, PartialEq)]
pub struct Cholesky {
    lower: Matrix,
}

impl Cholesky {
    /// Factors `a`, or `None` when it is not positive definite (a pivot is not a positive
    /// finite number), which includes a matrix holding a non-finite element.
    pub fn new(a: &Matrix) -> Option<Self> {
        let n = a.size();
        let mut l = Matrix::zeros(n);
        for j in 0..n {
            let mut pivot = a.get(j, j);
            for k in 0..j {
                pivot -= l.get(j, k) * l.get(j, k);
            }
            // Written so that NaN fails too.
            if !(pivot > 0.0 && pivot.is_finite()) {
                return None;
            }
            let diag = pivot.sqrt();
            l.set(j, j, diag);
            for i in (j + 1)..n {
                let mut v = a.get(i, j);
                for k in 0..j {
                    v -= l.get(i, k) * l.get(j, k);
                }
                l.set(i, j, v / diag);
            }
        }
        Some(Self { lower: l })
    }

    /// The factor L itself (lower triangular; zeros above the diagonal).
    pub fn lower(&self) -> &Matrix {
        &self.lower
    }

    /// Solves A x = b.
    pub fn solve(&self, b: &[f64]) -> Vec<f64> {
        let n = self.lower.size();
        let l = &self.lower;
        // L y = b, forward.
        let mut y = b.to_vec();
        for i in 0..n {
            for k in 0..i {
                y[i] -= l.get(i, k) * y[k];
            }
            y[i] /= l.get(i, i);
        }
        // L' x = y, backward.
        for i in (0..n).rev() {
            for k in (i + 1)..n {
                y[i] -= l.get(k, i) * y[k];
            }
            y[i] /= l.get(i, i);
        }
        y
    }

    /// A⁻¹, made exactly symmetric (the mean of the solved matrix and its transpose).
    pub fn inverse(&self) -> Matrix {
        let n = self.lower.size();
        let mut inv = Matrix::zeros(n);
        let mut unit = vec![0.0; n];
        for j in 0..n {
            unit[j] = 1.0;
            for (i, v) in self.solve(&unit).into_iter().enumerate() {
                inv.set(i, j, v);
            }
            unit[j] = 0.0;
        }
        for i in 0..n {
            for j in (i + 1)..n {
                let mean = 0.5 * (inv.get(i, j) + inv.get(j, i));
                inv.set(i, j, mean);
                inv.set(j, i, mean);
            }
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix(rows: &[&[f64]]) -> Matrix {
        Matrix::from_rows(&rows.iter().map(|r| r.to_vec()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn cholesky_solves_and_inverts() {
        // A = [[4, 2], [2, 3]]: L = [[2, 0], [1, √2]], A⁻¹ = 1/8 [[3, -2], [-2, 4]].
        let a = matrix(&[&[4.0, 2.0], &[2.0, 3.0]]);
        let chol = Cholesky::new(&a).unwrap();
        assert_eq!(chol.lower.get(0, 0), 2.0);
        assert_eq!(chol.lower.get(1, 0), 1.0);
        assert!((chol.lower.get(1, 1) - 2.0_f64.sqrt()).abs() < 1e-15);
        let x = chol.solve(&[2.0, 1.0]);
        // 1/8 [[3, -2], [-2, 4]] [2, 1] = [0.5, 0].
        assert!((x[0] - 0.5).abs() < 1e-15 && x[1].abs() < 1e-15, "{x:?}");
        let inv = chol.inverse();
        let expected = matrix(&[&[0.375, -0.25], &[-0.25, 0.5]]);
        for i in 0..2 {
            for j in 0..2 {
                assert!((inv.get(i, j) - expected.get(i, j)).abs() < 1e-15);
            }
        }
        assert_eq!(inv.get(0, 1), inv.get(1, 0));
    }

    #[test]
    fn cholesky_refuses_what_is_not_positive_definite() {
        // Eigenvalues 3 and -1.
        assert!(Cholesky::new(&matrix(&[&[1.0, 2.0], &[2.0, 1.0]])).is_none());
        // Singular.
        assert!(Cholesky::new(&matrix(&[&[1.0, 1.0], &[1.0, 1.0]])).is_none());
        assert!(Cholesky::new(&matrix(&[&[f64::NAN]])).is_none());
        assert!(Cholesky::new(&matrix(&[&[f64::INFINITY]])).is_none());
        assert!(Cholesky::new(&matrix(&[&[1e-300]])).is_some());
    }

    #[test]
    fn symmetry_is_checked_relative_to_scale() {
        let exact = matrix(&[&[2.0, 1.0], &[1.0, 2.0]]);
        assert_eq!(exact.asymmetry(1e-9), None);
        let rounding = matrix(&[&[2.0, 1.0], &[1.0 + 1e-12, 2.0]]);
        assert_eq!(rounding.asymmetry(1e-9), None);
        let off = matrix(&[&[2.0, 1.0], &[1.001, 2.0]]);
        assert_eq!(off.asymmetry(1e-9), Some((0, 1)));
    }

    #[test]
    fn products_and_blocks() {
        let a = matrix(&[&[1.0, 2.0, 0.0], &[2.0, 5.0, 1.0], &[0.0, 1.0, 3.0]]);
        assert_eq!(a.mul_vec(&[1.0, 0.0, 2.0]), vec![1.0, 4.0, 6.0]);
        // [1, 0, 2] · [1, 4, 6] = 13.
        assert_eq!(a.quadratic_form(&[1.0, 0.0, 2.0]), 13.0);
        assert_eq!(a.block(1, 2), matrix(&[&[5.0, 1.0], &[1.0, 3.0]]));
        let mut b = Matrix::zeros(2);
        b.add_outer(&[1.0, 2.0], 2.0);
        assert_eq!(b, matrix(&[&[2.0, 4.0], &[4.0, 8.0]]));
        assert_eq!(
            b.plus_scaled(&Matrix::scaled_identity(2, 1.0), 0.5),
            matrix(&[&[2.5, 4.0], &[4.0, 8.5]])
        );
        assert_eq!(b.rows(), vec![vec![2.0, 4.0], vec![4.0, 8.0]]);
        assert!(Matrix::from_rows(&[vec![1.0, 2.0]]).is_none());
    }
}
