//! "did you mean ...?" (BuildKit's `util/suggest`): the closest option within an
//! edit distance of 2.

use super::unicode::{to_lower, to_upper};

/// The closest of `options` to `value` (distance below 3), or `None` when there
/// is none or `value` is itself an option. Ties go to the first option.
pub(crate) fn suggest(value: &str, options: &[&str], case_sensitive: bool) -> Option<String> {
    let v = if case_sensitive {
        value.to_owned()
    } else {
        to_lower(value)
    };
    let mut best: Option<String> = None;
    let mut min = 3;
    for opt in options {
        let o = if case_sensitive {
            (*opt).to_owned()
        } else {
            to_lower(opt)
        };
        if o == v {
            return None;
        }
        let d = levenshtein(&v, &o);
        if d < min {
            min = d;
            // Go's matchCase: an all-upper-case value gets an upper-case suggestion.
            let upper = !case_sensitive && value != to_lower(value) && value == to_upper(value);
            best = Some(if upper { to_upper(&o) } else { o });
        }
    }
    best
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(levenshtein("kitten", "sitting"), 3);
        assert_eq!(
            suggest("chwon", &["chown", "chmod", "from"], true).as_deref(),
            Some("chown")
        );
        assert_eq!(
            suggest("RUNN", &["RUN", "CMD"], false).as_deref(),
            Some("RUN")
        );
        assert_eq!(
            suggest("runn", &["RUN", "CMD"], false).as_deref(),
            Some("run")
        );
        assert_eq!(suggest("xyzzy", &["RUN", "CMD"], false), None);
    }
}
