//! GGML's i-quants. So far the two 4-bit non-linear formats, IQ4_NL and IQ4_XS.

pub(crate) mod iq4;
