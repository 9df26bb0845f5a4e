//! Errors of the packing layouts.

/// Why codes could not be packed or unpacked in a layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// The layout does not store codes of this width.
    #[error("{layout} does not store {bits}-bit codes (it stores {supported})")]
    Bits {
        /// The layout.
        layout: &'static str,
        /// The width asked for.
        bits: u8,
        /// The widths it stores, in words.
        supported: &'static str,
    },
    /// A dimension that the layout packs in whole words is not a multiple of
    /// the codes per word (or of the multiple its loaders require).
    #[error("{layout}: {what} = {len} is not a multiple of {multiple}")]
    NotMultiple {
        /// The layout.
        layout: &'static str,
        /// Which dimension (`"in_features"`, `"out_features"`).
        what: &'static str,
        /// Its length.
        len: usize,
        /// The multiple required.
        multiple: usize,
    },
    /// A packed or unpacked array whose shape disagrees with the layout.
    #[error("{layout}: {what} has shape {actual:?}, expected {expected:?}")]
    Shape {
        /// The layout.
        layout: &'static str,
        /// Which array.
        what: &'static str,
        /// The shape the layout needs.
        expected: Vec<usize>,
        /// The shape given.
        actual: Vec<usize>,
    },
    /// A code that does not fit in the width.
    #[error("code {code} at index {index} does not fit in {bits} bits")]
    Code {
        /// Flat index of the code in its (row-major) input.
        index: usize,
        /// The code.
        code: u8,
        /// Bits per code.
        bits: u8,
    },
    /// A size computation overflowed `usize`.
    #[error("{layout}: size computation overflowed")]
    Overflow {
        /// The layout.
        layout: &'static str,
    },
}
