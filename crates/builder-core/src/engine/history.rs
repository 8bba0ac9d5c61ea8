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

/// Go's `%+v` of the image's healthcheck struct, as BuildKit writes it:
/// `{Test:[CMD-SHELL true] Interval:5s Timeout:0s StartPeriod:1m30s StartInterval:0s Retries:3}`.
pub(super) fn healthcheck(hc: &crate::image::Healthcheck) -> String {
    let d = |v: Option<u64>| go_duration(v.unwrap_or(0));
    format!(
        "{{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        go_plain_list(&hc.test),
        d(hc.interval),
        d(hc.timeout),
        d(hc.start_period),
        d(hc.start_interval),
        hc.retries.unwrap_or(0)
    )
}

/// Go's `time.Duration.String()` of `ns` nanoseconds: `0s`, `250ms`, `1.5s`, `1h0m30s`.
pub(super) fn go_duration(ns: u64) -> String {
    // `int.frac` of `v` in units of 10^digits, trailing zeros of the fraction dropped.
    fn frac(v: u64, digits: u32) -> String {
        let unit = 10u64.pow(digits);
        let (int, rest) = (v / unit, v % unit);
        if rest == 0 {
            return int.to_string();
        }
        let f = format!("{rest:0width$}", width = digits as usize);
        format!("{int}.{}", f.trim_end_matches('0'))
    }
    match ns {
        0 => "0s".into(),
        n if n < 1_000 => format!("{n}ns"),
        n if n < 1_000_000 => format!("{}µs", frac(n, 3)),
        n if n < 1_000_000_000 => format!("{}ms", frac(n, 6)),
        n => {
            let (h, m) = (n / 3_600_000_000_000, (n / 60_000_000_000) % 60);
            let s = frac(n % 60_000_000_000, 9);
            match (h, m) {
                (0, 0) => format!("{s}s"),
                (0, m) => format!("{m}m{s}s"),
                (h, m) => format!("{h}h{m}m{s}s"),
            }
        }
    }
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
    fn go_durations() {
        let cases = [
            (0, "0s"),
            (999, "999ns"),
            (1_500, "1.5µs"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (5_000_000_000, "5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (3_661_000_000_001, "1h1m1.000000001s"),
        ];
        for (ns, want) in cases {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn healthcheck_text() {
        let hc = crate::image::Healthcheck {
            test: vec!["CMD-SHELL".into(), "wget -q -O- localhost || exit 1".into()],
            interval: Some(5_000_000_000),
            timeout: Some(3_000_000_000),
            start_period: Some(90_000_000_000),
            start_interval: None,
            retries: Some(4),
        };
        assert_eq!(
            healthcheck(&hc),
            "{Test:[CMD-SHELL wget -q -O- localhost || exit 1] Interval:5s Timeout:3s \
             StartPeriod:1m30s StartInterval:0s Retries:4}"
        );
    }

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
