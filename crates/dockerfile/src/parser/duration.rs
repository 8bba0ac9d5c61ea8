//! Go's `time.ParseDuration` and `strconv` helpers, for values BuildKit parses
//! with them.

/// Go's `time.ParseDuration`, in nanoseconds (negative allowed).
pub(crate) fn parse_go_duration(orig: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(c @ ('-' | '+')) = s.chars().next() {
        neg = c == '-';
        s = &s[1..];
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    const LIMIT: u128 = 1 << 63;
    let mut total: u128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut v: u128 = 0;
        for &d in &b[..int_len] {
            v = v * 10 + u128::from(d - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
        }
        s = &s[int_len..];
        let pre = int_len > 0;
        let mut post = false;
        let (mut f, mut scale): (u128, f64) = (0, 1.0);
        if let Some(rest) = s.strip_prefix('.') {
            let frac_len = rest.bytes().take_while(u8::is_ascii_digit).count();
            let mut overflow = false;
            for &d in &rest.as_bytes()[..frac_len] {
                if overflow {
                    continue;
                }
                let nf = f * 10 + u128::from(d - b'0');
                if nf > LIMIT {
                    overflow = true;
                    continue;
                }
                f = nf;
                scale *= 10.0;
            }
            post = frac_len > 0;
            s = &rest[frac_len..];
        }
        if !pre && !post {
            return Err(invalid());
        }
        let unit_len = s
            .bytes()
            .take_while(|&c| !(c == b'.' || c.is_ascii_digit()))
            .count();
        if unit_len == 0 {
            return Err(format!("time: missing unit in duration {orig:?}"));
        }
        let unit_text = &s[..unit_len];
        s = &s[unit_len..];
        let unit: u128 = match unit_text {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {unit_text:?} in duration {orig:?}"
                ));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Go computes this in float64 and truncates.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let frac = (f as f64 * (unit as f64 / scale)) as u128;
            v += frac;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok(-i128::try_from(total).map_err(|_| invalid())?);
    }
    if total > LIMIT - 1 {
        return Err(invalid());
    }
    i128::try_from(total).map_err(|_| invalid())
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// go-units' `RAMInBytes`: `64m`, `1.5GiB`, `512 kb`, plain bytes.
pub(crate) fn parse_ram_bytes(size: &str) -> Option<u64> {
    let sep = size.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, sfx) = if size.as_bytes()[sep] == b' ' {
        (&size[..sep], &size[sep + 1..])
    } else {
        (&size[..=sep], &size[sep + 1..])
    };
    let n: f64 = num.parse().ok()?;
    if n.is_nan() || n < 0.0 {
        return None;
    }
    let sfx = sfx.to_ascii_lowercase();
    let mult: f64 = match sfx.as_bytes() {
        [] => 1.0,
        [b'b'] => 1.0,
        [u, rest @ ..] if rest.is_empty() || rest == b"b" || rest == b"ib" => match u {
            b'k' => 1024.0,
            b'm' => 1024f64.powi(2),
            b'g' => 1024f64.powi(3),
            b't' => 1024f64.powi(4),
            b'p' => 1024f64.powi(5),
            _ => return None,
        },
        _ => return None,
    };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("50ns"), Ok(50));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration("1h2m3s"), Ok(3_723_000_000_000));
        assert_eq!(parse_go_duration("-1ms"), Ok(-1_000_000));
        assert_eq!(parse_go_duration(".5us"), Ok(500));
        assert!(parse_go_duration("1").is_err());
        assert!(parse_go_duration("1d").is_err());
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration(".s").is_err());
        assert!(parse_go_duration("9999999999999999999h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_ram_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_ram_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_ram_bytes("512 kb"), Some(512 << 10));
        assert_eq!(parse_ram_bytes("100"), Some(100));
        assert_eq!(parse_ram_bytes("lots"), None);
        assert_eq!(parse_ram_bytes("1x"), None);
    }
}
