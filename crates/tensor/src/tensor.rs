//! The [`Tensor`] trait over ndarray arrays and raw little-endian byte views.

use half::{bf16, f16};
use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn};

use crate::{DType, Error, Result};

/// A tensor whose shape and element type are known and that converts to `f32`.
///
/// Implemented for every ndarray array of a [`Element`] type and for
/// [`TensorView`], the borrowed little-endian bytes that checkpoint readers hand out.
pub trait Tensor {
    /// The shape, outermost dimension first (row-major, as PyTorch).
    fn shape(&self) -> &[usize];

    /// The element type as stored.
    fn dtype(&self) -> DType;

    /// The values converted to `f32` (exactly for every float type up to f32;
    /// rounded to nearest for f64 and wide integers).
    fn to_f32(&self) -> Result<ArrayD<f32>>;

    /// Number of elements.
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// A Rust element type with a [`DType`].
pub trait Element: Copy + Send + Sync + 'static {
    /// The matching dtype.
    const DTYPE: DType;
    /// Converts one value to `f32`.
    fn to_f32(self) -> f32;
}

macro_rules! element {
    ($t:ty, $d:expr, $conv:expr) => {
        impl Element for $t {
            const DTYPE: DType = $d;
            #[inline]
            fn to_f32(self) -> f32 {
                let f: fn($t) -> f32 = $conv;
                f(self)
            }
        }
    };
}

element!(f32, DType::F32, |v| v);
element!(f64, DType::F64, |v| v as f32);
element!(f16, DType::F16, |v| v.to_f32());
element!(bf16, DType::BF16, |v| v.to_f32());
element!(i8, DType::I8, |v| v as f32);
element!(u8, DType::U8, |v| v as f32);
element!(i16, DType::I16, |v| v as f32);
element!(u16, DType::U16, |v| v as f32);
element!(i32, DType::I32, |v| v as f32);
element!(u32, DType::U32, |v| v as f32);
element!(i64, DType::I64, |v| v as f32);
element!(u64, DType::U64, |v| v as f32);
element!(bool, DType::Bool, |v| if v { 1.0 } else { 0.0 });

impl<S, D, T> Tensor for ArrayBase<S, D>
where
    S: Data<Elem = T>,
    D: Dimension,
    T: Element,
{
    fn shape(&self) -> &[usize] {
        ArrayBase::shape(self)
    }

    fn dtype(&self) -> DType {
        T::DTYPE
    }

    fn to_f32(&self) -> Result<ArrayD<f32>> {
        Ok(self.mapv(Element::to_f32).into_dyn())
    }
}

/// Borrowed little-endian bytes with a dtype and a shape, as stored in a checkpoint.
///
/// Construction checks that the byte count equals `numel × size_in_bytes`, so a
/// view is always consistent.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    dtype: DType,
    shape: &'a [usize],
    data: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// Wraps `data` as a tensor of `dtype` and `shape`.
    ///
    /// Fails with [`Error::ByteCount`] when the length does not match the shape,
    /// and with [`Error::Overflow`] when the element count overflows `usize`.
    pub fn new(dtype: DType, shape: &'a [usize], data: &'a [u8]) -> Result<Self> {
        let expected = byte_len(dtype, shape)?;
        if expected != data.len() {
            return Err(Error::ByteCount {
                expected,
                actual: data.len(),
            });
        }
        Ok(TensorView { dtype, shape, data })
    }

    /// The raw little-endian bytes.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }
}

/// Bytes needed to store `shape` elements of `dtype`, with overflow checked.
pub fn byte_len(dtype: DType, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or(Error::Overflow)
}

impl Tensor for TensorView<'_> {
    fn shape(&self) -> &[usize] {
        self.shape
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn to_f32(&self) -> Result<ArrayD<f32>> {
        let values = decode_f32(self.dtype, self.data);
        ArrayD::from_shape_vec(IxDyn(self.shape), values).map_err(|_| Error::ByteCount {
            expected: byte_len(self.dtype, self.shape).unwrap_or(usize::MAX),
            actual: self.data.len(),
        })
    }
}

/// Decodes little-endian elements of `dtype` into `f32`. Trailing bytes that do
/// not form a whole element are ignored.
pub fn decode_f32(dtype: DType, data: &[u8]) -> Vec<f32> {
    fn each<const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        data.chunks_exact(N)
            .map(|c| {
                let mut b = [0u8; N];
                b.copy_from_slice(c);
                f(b)
            })
            .collect()
    }
    match dtype {
        DType::Bool => each::<1>(data, |b| if b[0] != 0 { 1.0 } else { 0.0 }),
        DType::U8 => each::<1>(data, |b| b[0] as f32),
        DType::I8 => each::<1>(data, |b| b[0] as i8 as f32),
        DType::U16 => each::<2>(data, |b| u16::from_le_bytes(b) as f32),
        DType::I16 => each::<2>(data, |b| i16::from_le_bytes(b) as f32),
        DType::U32 => each::<4>(data, |b| u32::from_le_bytes(b) as f32),
        DType::I32 => each::<4>(data, |b| i32::from_le_bytes(b) as f32),
        DType::U64 => each::<8>(data, |b| u64::from_le_bytes(b) as f32),
        DType::I64 => each::<8>(data, |b| i64::from_le_bytes(b) as f32),
        DType::F16 => each::<2>(data, |b| f16::from_le_bytes(b).to_f32()),
        DType::BF16 => each::<2>(data, |b| bf16::from_le_bytes(b).to_f32()),
        DType::F32 => each::<4>(data, f32::from_le_bytes),
        DType::F64 => each::<8>(data, |b| f64::from_le_bytes(b) as f32),
        DType::F8E4M3 => each::<1>(data, |b| f8e4m3_to_f32(b[0])),
        DType::F8E5M2 => each::<1>(data, |b| f16::from_bits((b[0] as u16) << 8).to_f32()),
    }
}

/// Decodes one OCP FP8 E4M3 (`float8_e4m3fn`) value: bias 7, no infinities,
/// `S.1111.111` is NaN.
pub fn f8e4m3_to_f32(bits: u8) -> f32 {
    let sign = if bits & 0x80 != 0 { -1.0f32 } else { 1.0 };
    let exp = ((bits >> 3) & 0x0f) as i32;
    let man = (bits & 0x07) as f32;
    if exp == 0x0f && bits & 0x07 == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn arrays_are_tensors() {
        let a = array![[1.0f32, 2.0], [3.0, 4.0]];
        assert_eq!(Tensor::shape(&a), &[2, 2]);
        assert_eq!(Tensor::dtype(&a), DType::F32);
        let b = a.mapv(f16::from_f32);
        assert_eq!(Tensor::to_f32(&b).unwrap(), a.into_dyn());
    }

    #[test]
    fn view_checks_byte_count() {
        let shape = [2usize, 3];
        let bytes = [0u8; 11];
        assert!(matches!(
            TensorView::new(DType::F16, &shape, &bytes),
            Err(Error::ByteCount {
                expected: 12,
                actual: 11
            })
        ));
        let huge = [usize::MAX, 2];
        assert!(matches!(
            TensorView::new(DType::F32, &huge, &bytes),
            Err(Error::Overflow)
        ));
    }

    #[test]
    fn view_decodes_every_dtype() {
        let vals = [1.5f32, -2.0, 0.25];
        let shape = [3usize];
        let f16s: Vec<u8> = vals
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = vals
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect();
        let f64s: Vec<u8> = vals
            .iter()
            .flat_map(|&v| (v as f64).to_le_bytes())
            .collect();
        for (dt, bytes) in [(DType::F16, f16s), (DType::BF16, bf16s), (DType::F64, f64s)] {
            let v = TensorView::new(dt, &shape, &bytes).unwrap();
            assert_eq!(v.to_f32().unwrap().as_slice().unwrap(), &vals);
        }
        let i8s = [0xffu8, 0x02, 0x80];
        let v = TensorView::new(DType::I8, &shape, &i8s).unwrap();
        assert_eq!(
            v.to_f32().unwrap().as_slice().unwrap(),
            &[-1.0, 2.0, -128.0]
        );
    }

    #[test]
    fn fp8_e4m3_known_values() {
        assert_eq!(f8e4m3_to_f32(0x00), 0.0);
        assert_eq!(f8e4m3_to_f32(0x38), 1.0);
        assert_eq!(f8e4m3_to_f32(0x7e), 448.0);
        assert_eq!(f8e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8e4m3_to_f32(0xb8), -1.0);
        assert!(f8e4m3_to_f32(0x7f).is_nan());
    }
}
