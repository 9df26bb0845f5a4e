//! tensorpress facade
