//! (parser work: in progress)
