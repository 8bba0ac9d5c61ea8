//! Never panic.
use libtest_mimic::Trial;
pub(crate) fn trials(_out: &mut Vec<Trial>) {}
