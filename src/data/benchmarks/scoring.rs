//! Each benchmark's published scoring rule, and plain accuracy for comparison.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Benchmark;

/// Which number is the headline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// Each benchmark's own rule: BLINK subtask mean, 3DSRBench / SAT circular, CV-Bench 2D/3D.
    Published,
    /// Every item counts alone; SAT is asked in its file's option order only.
    Plain,
}

/// One scored item as the scorer sees it.
#[derive(Clone, Debug)]
pub struct Scored<'a> {
    pub kind: &'a str,
    pub meta: &'a Value,
    pub correct: bool,
}

/// A benchmark's scores: the headline by the chosen rule, per category, and
/// plain per-item accuracy.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BenchScore {
    pub overall: f64,
    /// How `overall` is computed.
    pub rule: String,
    pub items: usize,
    /// Questions after grouping (circular / rotated copies count once).
    pub questions: usize,
    /// Accuracy over the items in their file's option order, each alone.
    pub item_accuracy: f64,
    /// category -> (accuracy, questions)
    pub categories: BTreeMap<String, (f64, usize)>,
    /// Levels above the categories the published rule reports: 3DSRBench's 4
    /// types, CV-Bench's 2D / 3D and sources. category -> (accuracy, questions)
    #[serde(default)]
    pub breakdown: BTreeMap<String, (f64, usize)>,
    /// Rows with no published answer (BLINK's test split): not scored.
    #[serde(default)]
    pub unscorable: usize,
}

fn frac(a: usize, n: usize) -> f64 {
    if n == 0 { 0.0 } else { a as f64 / n as f64 }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// A copy made by rotating a question's options (not in the file).
fn rotated_copy(meta: &Value) -> bool {
    meta.get("rotation").and_then(Value::as_u64).is_some_and(|k| k > 0)
}

/// Right / asked per key.
#[derive(Default)]
struct Tally(BTreeMap<String, (usize, usize)>);

impl Tally {
    fn add(&mut self, key: String, ok: bool) {
        let e = self.0.entry(key).or_default();
        e.0 += usize::from(ok);
        e.1 += 1;
    }
    fn rates(&self) -> BTreeMap<String, (f64, usize)> {
        self.0.iter().map(|(k, &(c, n))| (k.clone(), (frac(c, n), n))).collect()
    }
}

/// Scores items by `scoring`. The published rules:
/// - grouped questions (VLMEvalKit circular copies by `g_index`, 3DSRBench by
///   `qid` without its `-k` suffix, SAT's option rotations) are right only when
///   every copy is right;
/// - BLINK: the mean of its subtasks' accuracies;
/// - CV-Bench: ((ADE20K + COCO) / 2 + Omni3D) / 2 — 2D averaged over its
///   sources, 3D over its one, then the two averaged;
/// - everything else: accuracy over questions.
pub fn score(b: Benchmark, items: &[Scored], scoring: Scoring) -> BenchScore {
    let in_file: Vec<&Scored> = items.iter().filter(|i| !rotated_copy(i.meta)).collect();
    let item_accuracy = frac(in_file.iter().filter(|i| i.correct).count(), in_file.len());
    if scoring == Scoring::Plain {
        let mut cats = Tally::default();
        for it in &in_file {
            cats.add(it.kind.to_string(), it.correct);
        }
        return BenchScore {
            overall: item_accuracy,
            rule: "plain accuracy (every item alone, options in the file's order)".into(),
            items: in_file.len(),
            questions: in_file.len(),
            item_accuracy,
            categories: cats.rates(),
            ..Default::default()
        };
    }
    // Grouped questions: right only when every copy is right.
    let mut groups: BTreeMap<(String, String), (bool, &Value)> = BTreeMap::new();
    for (i, it) in items.iter().enumerate() {
        // An item without a group is its own question.
        let g = match it.meta.get("group") {
            Some(g) if !g.is_null() => text(it.meta, "group"),
            _ => format!("#item{i}"),
        };
        let e = groups.entry((it.kind.to_string(), g)).or_insert((true, it.meta));
        e.0 &= it.correct;
    }
    let mut cats = Tally::default();
    let mut breakdown = Tally::default();
    for ((kind, _), (ok, meta)) in &groups {
        cats.add(kind.clone(), *ok);
        match b {
            Benchmark::ThreeDsr => breakdown.add(text(meta, "type"), *ok),
            Benchmark::CvBench => {
                let ty = text(meta, "type");
                breakdown.add(format!("{ty}/{}", text(meta, "source")), *ok);
                breakdown.add(ty, *ok);
            }
            _ => {}
        }
    }
    let right = groups.values().filter(|g| g.0).count();
    let categories = cats.rates();
    let breakdown = breakdown.rates();
    let grouped = groups.len() < items.len();
    let (overall, rule) = match b {
        Benchmark::Blink => {
            let accs: Vec<f64> = categories.values().map(|c| c.0).collect();
            (accs.iter().sum::<f64>() / accs.len().max(1) as f64, "mean of the subtask accuracies".to_string())
        }
        Benchmark::CvBench => {
            let avg = |ty: &str| {
                let accs: Vec<f64> =
                    breakdown.iter().filter(|(k, _)| k.starts_with(&format!("{ty}/"))).map(|(_, c)| c.0).collect();
                (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
            };
            match (avg("2D"), avg("3D")) {
                (Some(a), Some(c)) => ((a + c) / 2.0, "(2D averaged over its sources + 3D) / 2".to_string()),
                (Some(a), None) | (None, Some(a)) => (a, "only one of 2D / 3D present: its source average".into()),
                (None, None) => (frac(right, groups.len()), "accuracy".to_string()),
            }
        }
        Benchmark::ThreeDsr if grouped => {
            (frac(right, groups.len()), "circular: a question (qid without -k) right only if every copy is".into())
        }
        Benchmark::Sat if grouped => (
            frac(right, groups.len()),
            "circular: a question right only if right with its options in every rotation".into(),
        ),
        _ if grouped => (frac(right, groups.len()), "circular: a question right only if every copy is".into()),
        _ => (frac(right, groups.len()), "accuracy".to_string()),
    };
    BenchScore {
        overall,
        rule,
        items: items.len(),
        questions: groups.len(),
        item_accuracy,
        categories,
        breakdown,
        unscorable: 0,
    }
}
