//! tensorpress models (in progress)
