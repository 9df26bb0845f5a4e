//! tensorpress quant-core (in progress)
