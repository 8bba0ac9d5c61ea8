//! `created_by` texts of history entries, as BuildKit writes them (`convert.go`).

/// Go's `%q` of a string slice: `["a" "b"]`.
pub(super) fn go_quoted_list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| dockerfile::goquote(s)).collect();
    format!("[{}]", inner.join(" "))
}

/// Go's `%v` of a string slice: `[a b]`.
pub(super) fn go_plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// `RUN |2 a=1 b=2 /bin/sh -c cmd # buildkit` (the args prefix only when there are args).
pub(super) fn run(args: &[(String, String)], argv: &[String]) -> String {
    let mut s = String::from("RUN ");
    if !args.is_empty() {
        s.push_str(&format!("|{} ", args.len()));
        for (k, v) in args {
            s.push_str(&format!("{k}={v} "));
        }
    }
    s.push_str(&argv.join(" "));
    s.push_str(" # buildkit");
    s
}

/// `COPY --chown=a:b src dst # buildkit` (`--from` is not recorded).
pub(super) fn copy(keyword: &str, flags: &[String], sources: &[String], dest: &str) -> String {
    let mut parts = vec![keyword.to_owned()];
    parts.extend(flags.iter().cloned());
    parts.extend(sources.iter().cloned());
    parts.push(dest.to_owned());
    format!("{} # buildkit", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hist_01_and_03_shapes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            run(&[], &s(&["/bin/sh", "-c", "echo bar > foo4"])),
            "RUN /bin/sh -c echo bar > foo4 # buildkit"
        );
        assert_eq!(run(&[], &s(&["ls"])), "RUN ls # buildkit");
        let args = [
            ("foo".to_owned(), "bar2".to_owned()),
            ("bar".to_owned(), "123".to_owned()),
        ];
        assert_eq!(
            run(&args, &s(&["/bin/sh", "-c", "ls /etc/"])),
            "RUN |2 foo=bar2 bar=123 /bin/sh -c ls /etc/ # buildkit"
        );
        assert_eq!(
            copy("COPY", &[], &s(&["foo2"]), "foo3"),
            "COPY foo2 foo3 # buildkit"
        );
        assert_eq!(go_quoted_list(&s(&["a", "b"])), r#"["a" "b"]"#);
        assert_eq!(go_plain_list(&s(&["/bin/sh", "-c"])), "[/bin/sh -c]");
    }
}
