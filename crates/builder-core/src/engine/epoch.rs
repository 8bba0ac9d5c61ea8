//! SOURCE_DATE_EPOCH as Dockerfile 1.26 reads it: whole seconds, `context` (the main
//! context's source time), or the name of a stage that is only a remote ADD, whose source
//! gives the time.

use dockerfile::{BuildPlan, Env, Instruction, Lexer, Source, StageBase};

use super::{Build, Error};

/// What SOURCE_DATE_EPOCH was set to, and what it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Epoch {
    /// The value given (`--build-arg`, else the global `ARG`'s default).
    pub(super) given: Option<String>,
    /// Seconds since the epoch, if any.
    pub(super) seconds: Option<i64>,
}

impl Epoch {
    /// The value RUN steps see, when it differs from the one given (BuildKit replaces a
    /// `context` or stage value with the seconds it resolved, or with nothing).
    pub(super) fn replaced(&self) -> Option<String> {
        let given = self.given.as_deref()?;
        if given.is_empty() || given.parse::<i64>().is_ok() {
            return None;
        }
        Some(self.seconds.map(|s| s.to_string()).unwrap_or_default())
    }
}

fn invalid(reason: String) -> Error {
    super::invalid("build arg", "SOURCE_DATE_EPOCH", reason)
}

/// Resolves SOURCE_DATE_EPOCH for the build (`file` names the Dockerfile in errors).
pub(super) fn resolve(b: &Build, plan: &BuildPlan, file: &str) -> Result<Epoch, Error> {
    let given = b.build_args.get("SOURCE_DATE_EPOCH").cloned().or_else(|| {
        plan.global_args()
            .get("SOURCE_DATE_EPOCH")
            .map(str::to_owned)
    });
    let seconds = match given.as_deref() {
        None | Some("") => None,
        // A local directory has no source time.
        Some("context") => None,
        Some(s) => match s.parse::<i64>() {
            Ok(t) => Some(t),
            Err(_) => stage_time(b, plan, s, file)?,
        },
    };
    Ok(Epoch { given, seconds })
}

/// The time of the epoch stage named `name`, which must be `FROM scratch` holding ARGs and
/// exactly one ADD of one HTTP(S) URL.
fn stage_time(b: &Build, plan: &BuildPlan, name: &str, file: &str) -> Result<Option<i64>, Error> {
    let wanted = name.to_lowercase();
    let Some(stage) = plan
        .stages()
        .iter()
        .find(|s| s.name.as_deref() == Some(wanted.as_str()))
    else {
        return Err(invalid(format!("invalid SOURCE_DATE_EPOCH: {name}")));
    };
    let at = |reason: &str| Error::SourceDateEpoch {
        file: file.to_owned(),
        line: stage.span.start_line as usize,
        reason: reason.to_owned(),
    };
    if !matches!(stage.base, StageBase::Scratch) {
        return Err(at("SOURCE_DATE_EPOCH stage must use FROM scratch"));
    }
    let lexer = Lexer::new(plan.escape());
    // The stage's variables: the global ARGs but SOURCE_DATE_EPOCH, then its own ARGs.
    let mut env = Env::new();
    for (k, v) in plan.global_args().iter() {
        if k != "SOURCE_DATE_EPOCH" {
            env.set(k, v);
        }
    }
    let mut add = None;
    for ins in &stage.instructions {
        match &ins.value {
            Instruction::Arg(defs) => {
                for d in defs {
                    let key = d.name.value.as_str();
                    if let Some(v) = b.build_args.get(key) {
                        env.set(key, v);
                    } else if let Some(def) = &d.default {
                        let v = lexer
                            .process_word(&def.value, &env)
                            .map_err(|e| at(&e.to_string()))?;
                        env.set(key, &v);
                    }
                }
            }
            Instruction::Add(a) => {
                if add.is_some() {
                    return Err(at(
                        "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
                    ));
                }
                add = Some(a);
            }
            other => {
                return Err(at(&format!(
                    "SOURCE_DATE_EPOCH stage does not meet source-only requirements: unsupported {} instruction",
                    other.keyword()
                )));
            }
        }
    }
    let Some(add) = add else {
        return Err(at(
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD",
        ));
    };
    let [Source::Path(src)] = add.sources.as_slice() else {
        return Err(at(
            "SOURCE_DATE_EPOCH stage must contain exactly one remote ADD source",
        ));
    };
    let url = lexer
        .process_word(&src.value, &env)
        .map_err(|e| at(&e.to_string()))?;
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(at(
            "SOURCE_DATE_EPOCH stage source must be a single HTTP(S) ADD (git sources are not supported yet)",
        ));
    }
    let checksum = add
        .checksum
        .as_ref()
        .map(|c| lexer.process_word(&c.value, &env))
        .transpose()
        .map_err(|e| at(&e.to_string()))?;
    crate::copy::url_source_time(&url, checksum.as_deref(), None)
        .map_err(|e| at(&format!("SOURCE_DATE_EPOCH stage {name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_source_is_replaced_by_its_seconds_or_nothing() {
        let e = |given: Option<&str>, seconds| Epoch {
            given: given.map(str::to_owned),
            seconds,
        };
        assert_eq!(e(None, None).replaced(), None);
        assert_eq!(e(Some("17"), Some(17)).replaced(), None);
        assert_eq!(e(Some(""), None).replaced(), None);
        assert_eq!(e(Some("context"), None).replaced().as_deref(), Some(""));
        assert_eq!(e(Some("src"), Some(9)).replaced().as_deref(), Some("9"));
    }
}
