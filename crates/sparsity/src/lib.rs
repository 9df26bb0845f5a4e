//! tensorpress sparsity (in progress)
