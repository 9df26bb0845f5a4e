//! tensorpress io (in progress)
