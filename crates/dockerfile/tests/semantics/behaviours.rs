//! Items of `dockerfile-behaviours.md` decided without building (filled in with the
//! stage model).

use libtest_mimic::Trial;

pub(crate) fn trials() -> Vec<Trial> {
    Vec::new()
}
