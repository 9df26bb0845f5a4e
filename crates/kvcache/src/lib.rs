//! tensorpress kvcache (in progress)
