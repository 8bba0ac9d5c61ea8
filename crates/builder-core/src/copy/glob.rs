//! Source wildcards as BuildKit resolves them: Go's `path/filepath.Match` (Unix rules, `\`
//! escapes; [`dockerfile::filepath_match`]) applied to paths relative to the longest
//! wildcard-free prefix of the source.

pub(crate) use dockerfile::contains_wildcards;

/// Splits a cleaned absolute source path into the components before the first one with a
/// wildcard and the `/`-joined rest (empty when there is no wildcard).
pub(crate) fn split_wildcards(path: &str) -> (Vec<String>, String) {
    let mut fixed = Vec::new();
    let mut rest: Vec<&str> = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if rest.is_empty() && !contains_wildcards(part) {
            fixed.push(part.to_owned());
        } else {
            rest.push(part);
        }
    }
    (fixed, rest.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_split() {
        assert_eq!(
            split_wildcards("/sub/*/dir2/foo"),
            (vec!["sub".to_owned()], "*/dir2/foo".to_owned())
        );
        assert_eq!(
            split_wildcards("/a/b"),
            (vec!["a".to_owned(), "b".to_owned()], String::new())
        );
        assert_eq!(split_wildcards("/*.go"), (vec![], "*.go".to_owned()));
        assert!(!contains_wildcards("a\\*b"));
        assert!(contains_wildcards("a[b]"));
    }
}
