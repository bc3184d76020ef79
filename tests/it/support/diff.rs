//! A line diff, as `diff` computes one: the longest common subsequence of
//! lines kept, the rest removed or added. Tests apply it to the input to
//! prove it is the whole change, then count its lines.

/// One step of a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    Keep(&'a str),
    Remove(&'a str),
    Add(&'a str),
}

/// The diff turning `old` into `new`, line by line.
pub fn lines<'a>(old: &'a str, new: &'a str) -> Vec<Step<'a>> {
    let a: Vec<&str> = old.split_inclusive('\n').collect();
    let b: Vec<&str> = new.split_inclusive('\n').collect();
    // common[i][j]: length of the longest common subsequence of a[i..], b[j..].
    let mut common = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            common[i][j] = if a[i] == b[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut steps) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            steps.push(Step::Keep(a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || common[i + 1][j] >= common[i][j + 1]) {
            steps.push(Step::Remove(a[i]));
            i += 1;
        } else {
            steps.push(Step::Add(b[j]));
            j += 1;
        }
    }
    steps
}

/// Applies `steps` to `old`: the kept and removed lines must be `old`'s, in
/// order; the result is the kept and added lines.
pub fn apply(old: &str, steps: &[Step<'_>]) -> String {
    let mut lines = old.split_inclusive('\n');
    let mut out = String::new();
    for step in steps {
        match step {
            Step::Keep(line) => {
                assert_eq!(lines.next(), Some(*line), "the diff does not fit the input");
                out.push_str(line);
            }
            Step::Remove(line) => {
                assert_eq!(lines.next(), Some(*line), "the diff does not fit the input");
            }
            Step::Add(line) => out.push_str(line),
        }
    }
    assert_eq!(
        lines.next(),
        None,
        "the diff leaves input lines unaccounted"
    );
    out
}

/// Lines removed plus lines added.
pub fn changed(steps: &[Step<'_>]) -> usize {
    steps.iter().filter(|s| !matches!(s, Step::Keep(_))).count()
}

/// The added and removed lines, for assertion messages.
pub fn show(steps: &[Step<'_>]) -> String {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Keep(_) => None,
            Step::Remove(line) => Some(format!("-{line}")),
            Step::Add(line) => Some(format!("+{line}")),
        })
        .collect()
}
