//! Number formats beyond integers: small floats (FP8, FP6, FP4).
//!
//! - [`FloatFormat`]: element codecs bit-exact with the `ml_dtypes` package
//!   ([`FloatFormat::encode`], [`FloatFormat::decode`]), plus the saturating
//!   encoder quantizers use.

mod float;

pub use float::{FloatFormat, Specials};
