//! What [`super::Int4Matrix`] and [`super::Int8Matrix`] share: the shape,
//! the per-group scales and minima, and the stored column order of an
//! act-order weight.

use std::borrow::Cow;

use super::{check_len, check_rows, Q8Vector, BLOCK};
use crate::spec::Format;
use crate::{Error, QuantizedTensor, Result};

/// Shape, group parameters and column order of an integer matrix.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Groups {
    pub rows: usize,
    pub cols: usize,
    /// Columns per group (the last group may be narrower).
    pub group: usize,
    /// Per row: the row's group scales, then its group minima (one stream
    /// of parameters next to the codes instead of two).
    pub params: Vec<f32>,
    /// The input column each stored column reads (act-order), or `None`.
    pub perm: Option<Vec<u32>>,
}

impl Groups {
    /// Checks the shapes and values of a matrix given as `rows × cols` codes
    /// (`codes` of them), scales and zero points (`[rows, ⌈cols / group⌉]`)
    /// and an optional group index per column; `min(scale, zero)` is the
    /// additive term of a group in the stored code units.
    ///
    /// `cols` and `group` must be multiples of 32; a last group narrower
    /// than `group` is allowed (SmolLM2's 576 columns in groups of 128).
    /// With `g_idx`, group `g` must hold exactly the columns group `g` would
    /// hold in natural order.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rows: usize,
        cols: usize,
        group: usize,
        codes: usize,
        scales: &[f32],
        zeros: &[f32],
        g_idx: Option<&[u32]>,
        min: impl Fn(f32, f32) -> f32,
    ) -> Result<Groups> {
        if group == 0 || !group.is_multiple_of(BLOCK) || !cols.is_multiple_of(BLOCK) {
            return Err(Error::InvalidGroupSize { group, cols });
        }
        let groups = cols.div_ceil(group);
        check_len(
            "codes",
            rows.checked_mul(cols).ok_or(Error::Overflow)?,
            codes,
        )?;
        check_len("scales", rows * groups, scales.len())?;
        check_len("zeros", rows * groups, zeros.len())?;
        for (what, v) in [("scales", scales), ("zeros", zeros)] {
            if let Some(i) = v.iter().position(|v| !v.is_finite()) {
                return Err(Error::NonFinite {
                    what,
                    row: i / groups,
                    col: i % groups,
                    value: v[i],
                });
            }
        }
        let perm = match g_idx {
            None => None,
            Some(g_idx) => act_order(g_idx, cols, group)?,
        };
        let mut params = Vec::with_capacity(2 * scales.len());
        for (s, z) in scales.chunks(groups).zip(zeros.chunks(groups)) {
            params.extend_from_slice(s);
            params.extend(s.iter().zip(z).map(|(&s, &z)| min(s, z)));
        }
        Ok(Groups {
            rows,
            cols,
            group,
            params,
            perm,
        })
    }

    /// Groups per row.
    pub fn per_row(&self) -> usize {
        self.cols.div_ceil(self.group)
    }

    /// Row `r`'s group scales.
    pub fn scales(&self, r: usize) -> &[f32] {
        let g = self.per_row();
        &self.params[2 * r * g..(2 * r + 1) * g]
    }

    /// Row `r`'s group minima.
    pub fn mins(&self, r: usize) -> &[f32] {
        let g = self.per_row();
        &self.params[(2 * r + 1) * g..(2 * r + 2) * g]
    }

    /// The value of `row` (natural order) at stored column `j`.
    pub fn stored<T: Copy>(&self, row: &[T], j: usize) -> T {
        match &self.perm {
            Some(p) => row[p[j] as usize],
            None => row[j],
        }
    }

    /// `x` in stored column order.
    pub fn gather<'a>(&self, x: &'a [f32]) -> Cow<'a, [f32]> {
        match &self.perm {
            Some(p) => Cow::Owned(p.iter().map(|&c| x[c as usize]).collect()),
            None => Cow::Borrowed(x),
        }
    }

    /// Per group, `Σ d_b · Σ q` over the activation blocks of the group:
    /// what the minima multiply in an int8 product.
    pub fn q8_group_sums(&self, x: &Q8Vector) -> Vec<f32> {
        let per_group = self.group / BLOCK;
        x.scales()
            .chunks(per_group)
            .zip(x.block_sums().chunks(per_group))
            .map(|(d, s)| d.iter().zip(s).map(|(&d, &s)| d * s as f32).sum())
            .collect()
    }

    /// Dequantizes rows `first ..` into `out` (natural column order):
    /// `row(r, dst)` writes row `r` in stored order, which is scattered back
    /// for an act-order weight.
    pub fn dequantize_rows(
        &self,
        first: usize,
        out: &mut [f32],
        mut row: impl FnMut(usize, &mut [f32]),
    ) -> Result<()> {
        let n = check_rows(self.rows, self.cols, first, out)?;
        let mut row_buf = vec![0.0f32; if self.perm.is_some() { self.cols } else { 0 }];
        for (r, o) in (first..first + n).zip(out.chunks_exact_mut(self.cols)) {
            match &self.perm {
                Some(p) => {
                    row(r, &mut row_buf);
                    for (&c, &v) in p.iter().zip(&row_buf) {
                        o[c as usize] = v;
                    }
                }
                None => row(r, o),
            }
        }
        Ok(())
    }
}

/// The group size, scales and zero points of a `bits`-bit integer
/// [`QuantizedTensor`], `[rows, ⌈cols / group⌉]` row-major.
///
/// # Errors
/// [`Error::InvalidOption`] for another format, [`Error::InvalidGroupSize`]
/// for a zero group size.
pub(crate) fn quantized_params(
    q: &QuantizedTensor,
    bits: u8,
    expected: &'static str,
) -> Result<(usize, Vec<f32>, Vec<f32>)> {
    if q.spec().format != (Format::Int { bits }) {
        return Err(Error::InvalidOption {
            option: "format",
            value: q.spec().format.to_string(),
            expected,
        });
    }
    let [rows, cols] = q.shape();
    let group = q.group_size();
    if group == 0 {
        return Err(Error::InvalidGroupSize { group, cols });
    }
    let groups = cols.div_ceil(group);
    let mut scales = Vec::with_capacity(rows * groups);
    let mut zeros = Vec::with_capacity(rows * groups);
    for r in 0..rows {
        for g in 0..groups {
            let p = q.params(r, g);
            scales.push(p.scale);
            zeros.push(p.zero);
        }
    }
    Ok((group, scales, zeros))
}

/// The stored column order of an act-order weight: columns sorted by their
/// group index (stable), each group `group` wide; `None` when that is the
/// natural order.
///
/// # Errors
/// [`Error::Shape`] when `g_idx` is not `cols` long, [`Error::GroupIndex`]
/// when group `g` does not hold exactly `group` columns (the last one: the
/// rest).
fn act_order(g_idx: &[u32], cols: usize, group: usize) -> Result<Option<Vec<u32>>> {
    check_len("g_idx", cols, g_idx.len())?;
    let groups = cols.div_ceil(group);
    let mut order: Vec<u32> = (0..cols as u32).collect();
    order.sort_by_key(|&c| g_idx[c as usize]);
    for (j, &c) in order.iter().enumerate() {
        let index = g_idx[c as usize];
        if index as usize != j / group {
            return Err(Error::GroupIndex { index, groups });
        }
    }
    let identity = order.iter().enumerate().all(|(j, &c)| j == c as usize);
    Ok((!identity).then_some(order))
}
