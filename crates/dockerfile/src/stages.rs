//! (semantics work: in progress)
