//! Step names as BuildKit's Dockerfile frontend writes them in progress:
//! `[STAGE N/TOTAL] INSTRUCTION`.
//!
//! As BuildKit: TOTAL counts the FROM of an image (not `scratch`, not another stage) and
//! each RUN, COPY, ADD and WORKDIR; only those are numbered. The stage name is left out when
//! the Dockerfile has one stage, and N is padded to TOTAL's width (` 1/10`). Other
//! instructions (ENV, LABEL, ...) make no filesystem step in BuildKit; rbuild names them with
//! the stage prefix alone.

use dockerfile::{Instruction, Stage, StageBase};

/// The step names of one stage.
pub(crate) struct StepLabels {
    stage: Option<String>,
    total: usize,
    from_counted: bool,
    /// The number of each instruction of the stage (`None`: not numbered).
    numbers: Vec<Option<usize>>,
}

impl StepLabels {
    /// The labels of `stage`, one of `stage_count` stages of the Dockerfile.
    pub(crate) fn new(stage: &Stage, stage_count: usize) -> Self {
        let from_counted = matches!(stage.base, StageBase::Image(_));
        let mut n = usize::from(from_counted);
        let numbers = stage
            .instructions
            .iter()
            .map(|ins| match ins.value {
                Instruction::Run(_)
                | Instruction::Copy(_)
                | Instruction::Add(_)
                | Instruction::Workdir(_) => {
                    n += 1;
                    Some(n)
                }
                _ => None,
            })
            .collect();
        Self {
            stage: (stage_count > 1).then(|| stage.display_name()),
            total: n,
            from_counted,
            numbers,
        }
    }

    fn label(&self, number: Option<usize>, text: &str) -> String {
        let name = self.stage.as_deref().unwrap_or("");
        match number {
            Some(n) => {
                let width = self.total.to_string().len();
                let sep = if name.is_empty() { "" } else { " " };
                format!("[{name}{sep}{n:>width$}/{}] {text}", self.total)
            }
            None if name.is_empty() => text.to_owned(),
            None => format!("[{name}] {text}"),
        }
    }

    /// The name of the stage's FROM.
    pub(crate) fn from(&self, text: &str) -> String {
        self.label(self.from_counted.then_some(1), text)
    }

    /// A name with the stage prefix alone (a base image's ONBUILD trigger).
    pub(crate) fn unnumbered(&self, text: &str) -> String {
        self.label(None, text)
    }

    /// The name of the stage's instruction `i`.
    pub(crate) fn instruction(&self, i: usize, text: &str) -> String {
        self.label(self.numbers.get(i).copied().flatten(), text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(df: &str, stage: usize) -> (StepLabels, Vec<String>) {
        let df = dockerfile::parse(df).expect("parse");
        let plan =
            dockerfile::BuildPlan::new(&df, &dockerfile::PlanOptions::default()).expect("plan");
        let stages = plan.stages();
        let l = StepLabels::new(&stages[stage], stages.len());
        let names = (0..stages[stage].instructions.len())
            .map(|i| l.instruction(i, "X"))
            .collect();
        (l, names)
    }

    #[test]
    fn numbered_as_buildkit() {
        let df = "FROM busybox AS base\nWORKDIR /out\nENV A=1\nRUN true\nFROM scratch\nCOPY --from=base /out /out\n";
        let (l, names) = labels(df, 0);
        assert_eq!(l.from("FROM busybox"), "[base 1/3] FROM busybox");
        assert_eq!(names, ["[base 2/3] X", "[base] X", "[base 3/3] X"]);
        let (l, names) = labels(df, 1);
        assert_eq!(l.from("FROM scratch"), "[stage-1] FROM scratch");
        assert_eq!(names, ["[stage-1 1/1] X"]);
    }

    #[test]
    fn one_stage_has_no_name_and_numbers_are_padded() {
        let mut df = String::from("FROM busybox\n");
        for _ in 0..9 {
            df.push_str("RUN true\n");
        }
        let (l, names) = labels(&df, 0);
        assert_eq!(l.from("F"), "[ 1/10] F");
        assert_eq!(names[8], "[10/10] X");
    }
}
