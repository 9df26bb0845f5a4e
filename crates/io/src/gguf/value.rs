//! GGUF metadata values and the ordered key–value store with typed getters.

use std::collections::HashMap;
use std::fmt;

use crate::{Error, Result};

/// The type ids of GGUF metadata values (`gguf_type` in llama.cpp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgufValueType {
    /// `uint8`
    U8,
    /// `int8`
    I8,
    /// `uint16`
    U16,
    /// `int16`
    I16,
    /// `uint32`
    U32,
    /// `int32`
    I32,
    /// `float32`
    F32,
    /// `bool` (one byte, 0 or 1)
    Bool,
    /// UTF-8 string with a `u64` length prefix
    String,
    /// Typed array: element type id, `u64` count, elements
    Array,
    /// `uint64`
    U64,
    /// `int64`
    I64,
    /// `float64`
    F64,
}

impl GgufValueType {
    /// Every type, in id order.
    pub const ALL: [GgufValueType; 13] = [
        GgufValueType::U8,
        GgufValueType::I8,
        GgufValueType::U16,
        GgufValueType::I16,
        GgufValueType::U32,
        GgufValueType::I32,
        GgufValueType::F32,
        GgufValueType::Bool,
        GgufValueType::String,
        GgufValueType::Array,
        GgufValueType::U64,
        GgufValueType::I64,
        GgufValueType::F64,
    ];

    /// The type with id `id`, if GGUF defines one.
    pub fn from_id(id: u32) -> Option<GgufValueType> {
        GgufValueType::ALL.get(usize::try_from(id).ok()?).copied()
    }

    /// The id stored in files.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// A short name (`"u8"`, `"string"`, `"array"`, …).
    pub fn name(self) -> &'static str {
        match self {
            GgufValueType::U8 => "u8",
            GgufValueType::I8 => "i8",
            GgufValueType::U16 => "u16",
            GgufValueType::I16 => "i16",
            GgufValueType::U32 => "u32",
            GgufValueType::I32 => "i32",
            GgufValueType::F32 => "f32",
            GgufValueType::Bool => "bool",
            GgufValueType::String => "string",
            GgufValueType::Array => "array",
            GgufValueType::U64 => "u64",
            GgufValueType::I64 => "i64",
            GgufValueType::F64 => "f64",
        }
    }

    /// The fewest bytes one value of this type takes in a file: its size for
    /// scalars, the length prefix for strings, element type and count for arrays.
    pub fn min_encoded_size(self) -> usize {
        match self {
            GgufValueType::U8 | GgufValueType::I8 | GgufValueType::Bool => 1,
            GgufValueType::U16 | GgufValueType::I16 => 2,
            GgufValueType::U32 | GgufValueType::I32 | GgufValueType::F32 => 4,
            GgufValueType::U64 | GgufValueType::I64 | GgufValueType::F64 => 8,
            GgufValueType::String => 8,
            GgufValueType::Array => 12,
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GgufValue {
    /// `uint8`
    U8(u8),
    /// `int8`
    I8(i8),
    /// `uint16`
    U16(u16),
    /// `int16`
    I16(i16),
    /// `uint32`
    U32(u32),
    /// `int32`
    I32(i32),
    /// `float32`
    F32(f32),
    /// `bool`
    Bool(bool),
    /// UTF-8 string
    String(String),
    /// Typed array
    Array(GgufArray),
    /// `uint64`
    U64(u64),
    /// `int64`
    I64(i64),
    /// `float64`
    F64(f64),
}

/// A typed metadata array. Arrays of arrays may mix element types per inner array.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum GgufArray {
    /// `uint8` elements
    U8(Vec<u8>),
    /// `int8` elements
    I8(Vec<i8>),
    /// `uint16` elements
    U16(Vec<u16>),
    /// `int16` elements
    I16(Vec<i16>),
    /// `uint32` elements
    U32(Vec<u32>),
    /// `int32` elements
    I32(Vec<i32>),
    /// `float32` elements
    F32(Vec<f32>),
    /// `bool` elements
    Bool(Vec<bool>),
    /// string elements
    String(Vec<String>),
    /// nested arrays
    Array(Vec<GgufArray>),
    /// `uint64` elements
    U64(Vec<u64>),
    /// `int64` elements
    I64(Vec<i64>),
    /// `float64` elements
    F64(Vec<f64>),
}

/// Applies `$body` to the vector inside any [`GgufArray`] variant.
macro_rules! each_array {
    ($arr:expr, $v:ident => $body:expr) => {
        match $arr {
            GgufArray::U8($v) => $body,
            GgufArray::I8($v) => $body,
            GgufArray::U16($v) => $body,
            GgufArray::I16($v) => $body,
            GgufArray::U32($v) => $body,
            GgufArray::I32($v) => $body,
            GgufArray::F32($v) => $body,
            GgufArray::Bool($v) => $body,
            GgufArray::String($v) => $body,
            GgufArray::Array($v) => $body,
            GgufArray::U64($v) => $body,
            GgufArray::I64($v) => $body,
            GgufArray::F64($v) => $body,
        }
    };
}

/// Converts the integer elements of an array to `T`, if they are integers that fit.
macro_rules! int_array {
    ($arr:expr, $t:ty) => {
        match $arr {
            GgufArray::U8(v) => conv::<_, $t>(v),
            GgufArray::I8(v) => conv::<_, $t>(v),
            GgufArray::U16(v) => conv::<_, $t>(v),
            GgufArray::I16(v) => conv::<_, $t>(v),
            GgufArray::U32(v) => conv::<_, $t>(v),
            GgufArray::I32(v) => conv::<_, $t>(v),
            GgufArray::U64(v) => conv::<_, $t>(v),
            GgufArray::I64(v) => conv::<_, $t>(v),
            _ => None,
        }
    };
}

/// Converts each element, `Some(Err(value))` on the first that does not fit.
fn conv<S: Copy + Into<i128>, T: TryFrom<i128>>(v: &[S]) -> Option<Result<Vec<T>, i128>> {
    Some(
        v.iter()
            .map(|&x| {
                let x: i128 = x.into();
                T::try_from(x).map_err(|_| x)
            })
            .collect(),
    )
}

impl GgufArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        each_array!(self, v => v.len())
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem_type(&self) -> GgufValueType {
        match self {
            GgufArray::U8(_) => GgufValueType::U8,
            GgufArray::I8(_) => GgufValueType::I8,
            GgufArray::U16(_) => GgufValueType::U16,
            GgufArray::I16(_) => GgufValueType::I16,
            GgufArray::U32(_) => GgufValueType::U32,
            GgufArray::I32(_) => GgufValueType::I32,
            GgufArray::F32(_) => GgufValueType::F32,
            GgufArray::Bool(_) => GgufValueType::Bool,
            GgufArray::String(_) => GgufValueType::String,
            GgufArray::Array(_) => GgufValueType::Array,
            GgufArray::U64(_) => GgufValueType::U64,
            GgufArray::I64(_) => GgufValueType::I64,
            GgufArray::F64(_) => GgufValueType::F64,
        }
    }
}

impl GgufValue {
    /// The value's type.
    pub fn value_type(&self) -> GgufValueType {
        match self {
            GgufValue::U8(_) => GgufValueType::U8,
            GgufValue::I8(_) => GgufValueType::I8,
            GgufValue::U16(_) => GgufValueType::U16,
            GgufValue::I16(_) => GgufValueType::I16,
            GgufValue::U32(_) => GgufValueType::U32,
            GgufValue::I32(_) => GgufValueType::I32,
            GgufValue::F32(_) => GgufValueType::F32,
            GgufValue::Bool(_) => GgufValueType::Bool,
            GgufValue::String(_) => GgufValueType::String,
            GgufValue::Array(_) => GgufValueType::Array,
            GgufValue::U64(_) => GgufValueType::U64,
            GgufValue::I64(_) => GgufValueType::I64,
            GgufValue::F64(_) => GgufValueType::F64,
        }
    }

    /// The type for messages: `"u32"`, `"array<string>"`, ….
    pub fn type_description(&self) -> String {
        match self {
            GgufValue::Array(a) => format!("array<{}>", a.elem_type()),
            other => other.value_type().name().to_owned(),
        }
    }

    /// The value of an integer variant, widened; `None` for other variants.
    pub fn as_integer(&self) -> Option<i128> {
        Some(match *self {
            GgufValue::U8(v) => v.into(),
            GgufValue::I8(v) => v.into(),
            GgufValue::U16(v) => v.into(),
            GgufValue::I16(v) => v.into(),
            GgufValue::U32(v) => v.into(),
            GgufValue::I32(v) => v.into(),
            GgufValue::U64(v) => v.into(),
            GgufValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The string, if this is a string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The array, if this is an array value.
    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for GgufValue {
            fn from(x: $t) -> GgufValue { GgufValue::$v(x) }
        }
        impl From<Vec<$t>> for GgufValue {
            fn from(x: Vec<$t>) -> GgufValue { GgufValue::Array(GgufArray::$v(x)) }
        }
        impl From<Vec<$t>> for GgufArray {
            fn from(x: Vec<$t>) -> GgufArray { GgufArray::$v(x) }
        }
    )*};
}

from_scalar!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32, f32 => F32,
    bool => Bool, String => String, u64 => U64, i64 => I64, f64 => F64);

impl From<&str> for GgufValue {
    fn from(x: &str) -> GgufValue {
        GgufValue::String(x.to_owned())
    }
}

impl From<Vec<&str>> for GgufValue {
    fn from(x: Vec<&str>) -> GgufValue {
        GgufValue::Array(GgufArray::String(
            x.into_iter().map(str::to_owned).collect(),
        ))
    }
}

impl From<GgufArray> for GgufValue {
    fn from(x: GgufArray) -> GgufValue {
        GgufValue::Array(x)
    }
}

impl From<Vec<GgufArray>> for GgufValue {
    fn from(x: Vec<GgufArray>) -> GgufValue {
        GgufValue::Array(GgufArray::Array(x))
    }
}

/// Metadata: key–value pairs in file order, with lookup by key.
///
/// Keys are unique: [`GgufMetadata::insert`] refuses a duplicate, as the readers do.
/// The typed getters fail with [`Error::MissingKey`], [`Error::WrongType`] or
/// [`Error::ValueOutOfRange`]; integer getters accept any integer type whose
/// value fits (files disagree on whether, say, a token id is `u32` or `i32`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GgufMetadata {
    entries: Vec<(String, GgufValue)>,
    index: HashMap<String, usize>,
}

impl GgufMetadata {
    /// An empty store.
    pub fn new() -> GgufMetadata {
        GgufMetadata::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pairs in order.
    pub fn as_slice(&self) -> &[(String, GgufValue)] {
        &self.entries
    }

    /// Iterates over the pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &GgufValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Appends a pair; fails with [`Error::DuplicateKey`] if the key exists.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<GgufValue>) -> Result<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(Error::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value.into()));
        Ok(())
    }

    /// Replaces the value under `key` in place, or appends it; returns the old value.
    pub fn set(
        &mut self,
        key: impl Into<String>,
        value: impl Into<GgufValue>,
    ) -> Option<GgufValue> {
        let key = key.into();
        let value = value.into();
        match self.index.get(&key) {
            Some(&i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<GgufValue> {
        let i = self.index.remove(key)?;
        let (_, value) = self.entries.remove(i);
        for (k, _) in &self.entries[i..] {
            if let Some(j) = self.index.get_mut(k) {
                *j -= 1;
            }
        }
        Some(value)
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    fn require(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| Error::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong(key: &str, expected: &'static str, found: &GgufValue) -> Error {
        Error::WrongType {
            key: key.to_owned(),
            expected,
            found: found.type_description(),
        }
    }

    fn int<T: TryFrom<i128>>(&self, key: &str, target: &'static str) -> Result<T> {
        let v = self.require(key)?;
        let i = v.as_integer().ok_or_else(|| Self::wrong(key, target, v))?;
        T::try_from(i).map_err(|_| Error::ValueOutOfRange {
            key: key.to_owned(),
            value: i,
            target,
        })
    }

    /// An integer value as `u32`.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.int(key, "u32")
    }

    /// An integer value as `u64`.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.int(key, "u64")
    }

    /// An integer value as `i32`.
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.int(key, "i32")
    }

    /// An integer value as `i64`.
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.int(key, "i64")
    }

    /// An integer value as `usize`.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.int(key, "usize")
    }

    /// A float value as `f32` (an `f64` value is rounded).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.require(key)? {
            GgufValue::F32(v) => Ok(*v),
            GgufValue::F64(v) => Ok(*v as f32),
            other => Err(Self::wrong(key, "f32", other)),
        }
    }

    /// A float value as `f64`.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.require(key)? {
            GgufValue::F32(v) => Ok(f64::from(*v)),
            GgufValue::F64(v) => Ok(*v),
            other => Err(Self::wrong(key, "f64", other)),
        }
    }

    /// A bool value.
    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.require(key)? {
            GgufValue::Bool(v) => Ok(*v),
            other => Err(Self::wrong(key, "bool", other)),
        }
    }

    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "string", v))
    }

    /// An array value of any element type.
    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "array", v))
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.require(key)? {
            GgufValue::Array(GgufArray::String(v)) => Ok(v),
            other => Err(Self::wrong(key, "array<string>", other)),
        }
    }

    /// An array of `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.require(key)? {
            GgufValue::Array(GgufArray::F32(v)) => Ok(v),
            other => Err(Self::wrong(key, "array<f32>", other)),
        }
    }

    fn int_array<T: TryFrom<i128>>(&self, key: &str, target: &'static str) -> Result<Vec<T>> {
        let v = self.require(key)?;
        let converted = match v {
            GgufValue::Array(a) => int_array!(a, T),
            _ => None,
        };
        match converted {
            Some(Ok(out)) => Ok(out),
            Some(Err(value)) => Err(Error::ValueOutOfRange {
                key: key.to_owned(),
                value,
                target,
            }),
            None => Err(Self::wrong(key, target, v)),
        }
    }

    /// An array of integers, each converted to `i32`.
    pub fn get_i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.int_array(key, "array<i32>")
    }

    /// An array of integers, each converted to `u32`.
    pub fn get_u32_array(&self, key: &str) -> Result<Vec<u32>> {
        self.int_array(key, "array<u32>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_ids_round_trip() {
        for t in GgufValueType::ALL {
            assert_eq!(GgufValueType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgufValueType::Array.id(), 9);
        assert_eq!(GgufValueType::F64.id(), 12);
        assert_eq!(GgufValueType::from_id(13), None);
    }

    #[test]
    fn getters_are_typed() {
        let mut m = GgufMetadata::new();
        m.insert("a", 7u8).unwrap();
        m.insert("neg", -1i32).unwrap();
        m.insert("s", "hi").unwrap();
        m.insert("f", 0.5f64).unwrap();
        m.insert("toks", vec!["x", "y"]).unwrap();
        m.insert("types", vec![1u8, 2, 3]).unwrap();
        m.insert("big", vec![u64::MAX]).unwrap();
        assert_eq!(m.get_u32("a").unwrap(), 7);
        assert_eq!(m.get_i64("neg").unwrap(), -1);
        assert_eq!(m.get_f32("f").unwrap(), 0.5);
        assert_eq!(m.get_str("s").unwrap(), "hi");
        assert_eq!(m.get_str_array("toks").unwrap(), ["x", "y"]);
        assert_eq!(m.get_i32_array("types").unwrap(), [1, 2, 3]);
        assert!(matches!(m.get_u32("missing"), Err(Error::MissingKey { key }) if key == "missing"));
        assert!(matches!(
            m.get_u32("neg"),
            Err(Error::ValueOutOfRange {
                value: -1,
                target: "u32",
                ..
            })
        ));
        assert!(matches!(
            m.get_str("a"),
            Err(Error::WrongType { expected: "string", ref found, .. }) if found == "u8"
        ));
        assert!(matches!(
            m.get_f32_array("toks"),
            Err(Error::WrongType { ref found, .. }) if found == "array<string>"
        ));
        assert!(matches!(
            m.get_i32_array("big"),
            Err(Error::ValueOutOfRange { .. })
        ));
        assert!(matches!(
            m.insert("a", 1u8),
            Err(Error::DuplicateKey { .. })
        ));
    }

    #[test]
    fn set_and_remove_keep_order() {
        let mut m = GgufMetadata::new();
        for (i, k) in ["a", "b", "c"].into_iter().enumerate() {
            m.insert(k, i as u32).unwrap();
        }
        assert_eq!(m.set("b", 9u32), Some(GgufValue::U32(1)));
        assert_eq!(m.remove("a"), Some(GgufValue::U32(0)));
        assert_eq!(m.set("d", true), None);
        let keys: Vec<_> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "c", "d"]);
        assert_eq!(m.get_u32("c").unwrap(), 2);
        assert_eq!(m.get_u32("b").unwrap(), 9);
    }
}
