//! tensorpress codecs (in progress)
