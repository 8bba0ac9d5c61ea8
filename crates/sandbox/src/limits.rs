//! `--ulimit` and `--shm-size` as docker and BuildKit take them: resource limits set in
//! the step's process (setrlimit, before it drops privileges) and the size of its
//! `/dev/shm` tmpfs.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::error::SandboxError;

/// The resource names docker's `--ulimit` knows, and their Linux resource.
const NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// One `--ulimit NAME=SOFT[:HARD]` (`-1` is unlimited; HARD defaults to SOFT).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// The resource (`nofile`, `nproc`, `core`, ...).
    pub name: String,
    /// The soft limit, `None` for unlimited.
    pub soft: Option<u64>,
    /// The hard limit, `None` for unlimited.
    pub hard: Option<u64>,
}

fn invalid(value: &str, reason: impl Into<String>) -> SandboxError {
    SandboxError::InvalidSpec {
        field: "ulimit",
        reason: format!("{value:?}: {}", reason.into()),
    }
}

fn limit(value: &str, part: &str) -> Result<Option<u64>, SandboxError> {
    match part.parse::<i64>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(invalid(value, format!("invalid limit {part:?}"))),
    }
}

impl FromStr for Ulimit {
    type Err = SandboxError;

    /// ```
    /// use rbuild_sandbox::Ulimit;
    /// let u: Ulimit = "nofile=1024:4096".parse().unwrap();
    /// assert_eq!((u.soft, u.hard), (Some(1024), Some(4096)));
    /// assert!("nofile=10:5".parse::<Ulimit>().is_err());
    /// assert!("colour=1".parse::<Ulimit>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Ulimit, SandboxError> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| invalid(s, "expected NAME=SOFT[:HARD]"))?;
        if !NAMES.contains(&name) {
            return Err(invalid(
                s,
                format!("unknown ulimit {name:?} ({})", NAMES.join(", ")),
            ));
        }
        let (soft, hard) = match rest.split_once(':') {
            Some((a, b)) => (limit(s, a)?, limit(s, b)?),
            None => {
                let v = limit(s, rest)?;
                (v, v)
            }
        };
        let as_num = |v: Option<u64>| v.unwrap_or(u64::MAX);
        if as_num(soft) > as_num(hard) {
            return Err(invalid(
                s,
                "the soft limit must not be greater than the hard limit",
            ));
        }
        Ok(Ulimit {
            name: name.to_owned(),
            soft,
            hard,
        })
    }
}

impl Ulimit {
    fn resource(&self) -> rustix::process::Resource {
        use rustix::process::Resource as R;
        match self.name.as_str() {
            "as" => R::As,
            "core" => R::Core,
            "cpu" => R::Cpu,
            "data" => R::Data,
            "fsize" => R::Fsize,
            "locks" => R::Locks,
            "memlock" => R::Memlock,
            "msgqueue" => R::Msgqueue,
            "nice" => R::Nice,
            "nproc" => R::Nproc,
            "rss" => R::Rss,
            "rtprio" => R::Rtprio,
            "rttime" => R::Rttime,
            "sigpending" => R::Sigpending,
            "stack" => R::Stack,
            _ => R::Nofile,
        }
    }

    /// Sets the limit on this process (inherited by what it executes).
    pub(crate) fn apply(&self) -> rustix::io::Result<()> {
        rustix::process::setrlimit(
            self.resource(),
            rustix::process::Rlimit {
                current: self.soft,
                maximum: self.hard,
            },
        )
    }
}

/// Why a text is not a size (see [`parse_ram_in_bytes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// The number before the unit does not parse.
    #[error("not a number")]
    Number,
    /// The unit is none of docker's.
    #[error("unknown unit")]
    Unit,
    /// The size does not fit in 64 bits.
    #[error("out of range")]
    Range,
}

/// A size as docker reads one (go-units' `RAMInBytes`: `--shm-size`, `--keep-storage`): a
/// number with an optional binary unit `k`, `m`, `g`, `t`, `p`, optionally followed by `i`
/// and/or `b`, any case, in bytes (powers of 1024).
///
/// ```
/// use rbuild_sandbox::{SizeError, parse_ram_in_bytes};
/// assert_eq!(parse_ram_in_bytes("512mib"), Ok(512 << 20));
/// assert_eq!(parse_ram_in_bytes("0"), Ok(0));
/// assert_eq!(parse_ram_in_bytes("10 parsecs"), Err(SizeError::Unit));
/// ```
pub fn parse_ram_in_bytes(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| SizeError::Number)?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(SizeError::Unit),
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes > u64::MAX as f64 {
        return Err(SizeError::Range);
    }
    Ok(bytes as u64)
}

/// A size as docker's `--shm-size` takes it: [`parse_ram_in_bytes`], at least one byte.
///
/// ```
/// assert_eq!(rbuild_sandbox::parse_mem_bytes("64m").unwrap(), 64 << 20);
/// assert_eq!(rbuild_sandbox::parse_mem_bytes("2GB").unwrap(), 2 << 30);
/// assert!(rbuild_sandbox::parse_mem_bytes("lots").is_err());
/// ```
pub fn parse_mem_bytes(s: &str) -> Result<u64, SandboxError> {
    match parse_ram_in_bytes(s) {
        Ok(bytes) if bytes >= 1 => Ok(bytes),
        _ => Err(SandboxError::InvalidSpec {
            field: "shm-size",
            reason: format!("invalid size {s:?}"),
        }),
    }
}

/// The limits of a RUN step's process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLimits {
    /// The size of `/dev/shm` in bytes (`None`: 64 MiB, as BuildKit).
    pub shm_size: Option<u64>,
    /// Resource limits, in order (a later one for a resource wins).
    pub ulimits: Vec<Ulimit>,
}

impl RunLimits {
    /// No limit set (the defaults).
    pub fn is_default(&self) -> bool {
        self.shm_size.is_none() && self.ulimits.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits() {
        let u: Ulimit = "core=-1".parse().unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        let u: Ulimit = "nproc=10:-1".parse().unwrap();
        assert_eq!((u.soft, u.hard), (Some(10), None));
        for bad in ["nofile", "nofile=x", "nofile=-2", "nofile=5:1", "=1"] {
            assert!(bad.parse::<Ulimit>().is_err(), "{bad}");
        }
        assert_eq!(parse_mem_bytes("1024").unwrap(), 1024);
        assert_eq!(parse_mem_bytes("1.5k").unwrap(), 1536);
        assert_eq!(parse_mem_bytes("2 MiB").unwrap(), 2 << 20);
        assert!(parse_mem_bytes("0").is_err());
        assert!(parse_mem_bytes("5x").is_err());
    }
}
