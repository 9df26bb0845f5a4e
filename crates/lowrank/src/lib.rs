//! tensorpress lowrank (in progress)
