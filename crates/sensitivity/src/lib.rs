//! tensorpress sensitivity (in progress)
