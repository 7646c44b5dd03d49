//! The hybrid cold-start mix: letter-only viewpoint items interleaved with pseudo
//! chain-of-thought items (0.9 : 0.1 by default), all under the Actial system
//! prompt. Pseudo-CoTs are written from the ground truth by templates with the
//! paper's sections (identify the images, visual analysis, the movement in 3D, the
//! trajectory, the answer); CoTs written elsewhere can be imported instead.

use std::collections::HashMap;

use serde_json::Value;

use super::geometry::Side;
use super::qa::{ACTIAL_SYSTEM, QaRecord};
use crate::rng::Philox;

/// The ground truth a viewpoint record carries in its `meta`.
#[derive(Clone, Debug, PartialEq)]
pub struct PairFacts {
    pub camera_translation: Side,
    pub camera_rotation: Side,
    pub yaw_deg: f64,
    /// Rendered pairs: the colours of the parts each photo shows, left to right,
    /// and what a part is called ("part", "face").
    pub visible: Option<([Vec<String>; 2], String)>,
}

impl PairFacts {
    pub fn from_meta(meta: &Value) -> Option<PairFacts> {
        let side = |k: &str| match meta.get(k)?.as_str()? {
            "left" => Some(Side::Left),
            "right" => Some(Side::Right),
            _ => None,
        };
        Some(PairFacts {
            camera_translation: side("camera_translation")?,
            camera_rotation: side("camera_rotation")?,
            yaw_deg: meta.get("yaw_deg")?.as_f64()?,
            visible: visible_from_meta(meta),
        })
    }
}

fn visible_from_meta(meta: &Value) -> Option<([Vec<String>; 2], String)> {
    let list =
        |v: &Value| -> Option<Vec<String>> { v.as_array()?.iter().map(|c| c.as_str().map(str::to_string)).collect() };
    let v = meta.get("visible")?.as_array()?;
    let noun = meta.get("noun")?.as_str()?.to_string();
    match v.as_slice() {
        [a, b] => Some(([list(a)?, list(b)?], noun)),
        _ => None,
    }
}

/// The faces a photo shows, as the CoT says them ("nothing" for none).
fn join_words(ws: &[String]) -> String {
    if ws.is_empty() { "nothing".to_string() } else { super::pretrain::join_words(ws) }
}

/// The option text of the answer letter in a rendered prompt (`... B: text C: ...`).
fn option_text(prompt: &str, letter: &str) -> Option<String> {
    let start = prompt.find(&format!(" {letter}: "))? + letter.len() + 3;
    let rest = &prompt[start..];
    let end = ["A", "B", "C", "D", "E", "F", "G", "H"]
        .iter()
        .filter_map(|l| rest.find(&format!(" {l}: ")))
        .chain(rest.find(" Select"))
        .min()
        .unwrap_or(rest.len());
    Some(rest[..end].trim().to_string())
}

/// How long the pseudo chain-of-thought is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CotStyle {
    /// The paper's five steps (identify the images, visual analysis, the motion
    /// in 3D, the trajectory, the conclusion): ~260 tiny-tokenizer tokens.
    #[default]
    Full,
    /// Two sentences: the motion in words, then the question's perspective and
    /// the option (~40 tokens). The tiny preset's: a 4-layer model trained on 10%
    /// CoT items for minutes does not learn to finish a 260-token template, so GRPO
    /// would see no format reward at all (docs/TINY_BASE.md).
    Short,
}

impl std::str::FromStr for CotStyle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(CotStyle::Full),
            "short" => Ok(CotStyle::Short),
            _ => Err(format!("unknown CoT style {s:?} (expected \"full\" or \"short\")")),
        }
    }
}

/// A pseudo chain-of-thought for a viewpoint record, from its ground truth, in
/// the paper's five-step form.
/// `None` when the record lacks the facts (not a viewpoint item).
pub fn pseudo_cot(r: &QaRecord, rng: &mut Philox) -> Option<String> {
    pseudo_cot_styled(r, rng, CotStyle::Full)
}

/// [`pseudo_cot`] in a chosen [`CotStyle`]. Both styles state the motion in the
/// same words whatever the question, then apply the question's perspective: the
/// object's perspective swaps left and right.
pub fn pseudo_cot_styled(r: &QaRecord, rng: &mut Philox, style: CotStyle) -> Option<String> {
    let f = PairFacts::from_meta(&r.meta)?;
    let option = option_text(&r.prompt, &r.answer)?;
    let moved = f.camera_translation.word();
    let turned = f.camera_rotation.word();
    if style == CotStyle::Short {
        let view = match r.kind.as_str() {
            "camera_translation" => format!("From the camera's view it moved {moved}."),
            "object_translation" => format!(
                "From the object's view left and right swap, so it moved {}.",
                f.camera_translation.mirrored().word()
            ),
            "camera_rotation" => format!("From the camera's view it turned {turned}."),
            _ => return None,
        };
        return Some(format!(
            "<think>The camera moved {moved} and turned {turned}. {view} The answer is {letter}: {option}.</think><answer>{letter}</answer>",
            letter = r.answer
        ));
    }
    let angle = f.yaw_deg.abs().round();
    let opener = ["Let me look at the two photos.", "I compare the two photos.", "First, the two images."]
        [(rng.next_u32() % 3) as usize];
    let conclusion = match r.kind.as_str() {
        "camera_translation" => {
            format!("From the camera's perspective, the second camera is to the {moved} of the first one.")
        }
        "object_translation" => format!(
            "The question takes the object's perspective: facing the camera, left and right swap, so the camera moved to the {}.",
            f.camera_translation.mirrored().word()
        ),
        "camera_rotation" => {
            format!("From the camera's perspective, the second camera is rotated to the {turned} of the first one.")
        }
        _ => return None,
    };
    // Rendered pairs know what each photo shows: the analysis starts from it.
    let seen = match &f.visible {
        Some(([a, b], noun)) => format!(
            "the first photo shows the {noun}s {} from left to right, the second photo shows {}; ",
            join_words(a),
            join_words(b)
        ),
        None => String::new(),
    };
    Some(format!(
        "<think>{opener} Identifying the images: both photos show the same object, which did not move, taken by two cameras \
         from different positions. Visual analysis: {seen}in the second photo the object is seen from a different side; the part of \
         the object that was on the {moved} in the first photo now faces the camera, so the view has swung around the object \
         rather than the object turning. The movement in 3D: the camera travelled about {angle} degrees around the object to \
         its {moved}, and to keep the object in view it turned to its {turned}. The trajectory: an arc around the object, \
         moving {moved} while rotating {turned}. {conclusion} The answer is {letter}: {option}.</think><answer>{letter}</answer>",
        letter = r.answer,
    ))
}

/// `<think>…</think><answer>…</answer>` with nothing else (PAPER.md's format
/// reward, dot-all, case-insensitive), and the answer's content.
pub fn cot_answer(text: &str) -> Option<String> {
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    if !lower.starts_with("<think>") || !lower.ends_with("</answer>") {
        return None;
    }
    let think_end = lower.find("</think>")?;
    let after = lower[think_end + 8..].trim_start();
    if !after.starts_with("<answer>") {
        return None;
    }
    let a0 = t.len() - after.len() + 8;
    let a1 = t.len() - 9;
    (a1 >= a0).then(|| t[a0..a1].trim().to_string())
}

#[derive(Clone, Debug)]
pub struct MixConfig {
    /// Fraction of CoT items in the output (the paper: 0.1).
    pub cot_fraction: f64,
    /// Distinct CoT items (the paper: ~1K); they repeat to fill the fraction.
    pub cot_unique: usize,
    pub system: String,
    pub seed: u64,
    /// When set, CoT items end with this instead of the letter-only instruction
    /// (`qa::with_instruction`); None keeps the letter items' prompt (the paper
    /// does not say which the release used).
    pub cot_instruction: Option<String>,
    /// Length of the generated pseudo-CoTs.
    pub cot_style: CotStyle,
}

impl Default for MixConfig {
    fn default() -> Self {
        MixConfig {
            cot_fraction: 0.1,
            cot_unique: 1000,
            system: ACTIAL_SYSTEM.to_string(),
            seed: 0,
            cot_instruction: None,
            cot_style: CotStyle::Full,
        }
    }
}

/// What `mix` did.
#[derive(Debug, Default)]
pub struct MixReport {
    pub letters: usize,
    pub cot_slots: usize,
    pub cot_unique: usize,
    pub imported: usize,
    /// Reason -> count of records or imported CoTs not used.
    pub skipped: std::collections::BTreeMap<String, usize>,
}

/// Interleaves `letters` (kept in order, responses = the answer letter) with CoT
/// items built from records spread evenly over the set that have facts (or from `imported`, keyed
/// by record id), so that CoT items make up `cot_fraction` of the output: after
/// every ~(1−f)/f letter items comes one CoT item, cycling through the unique ones.
pub fn mix(letters: &[QaRecord], imported: &HashMap<String, String>, c: &MixConfig) -> (Vec<QaRecord>, MixReport) {
    let mut rep = MixReport::default();
    let mut rng = Philox::new(c.seed, 0xc07);
    let mut cots: Vec<QaRecord> = Vec::new();
    // Draw the CoT sources evenly across the letters (every `step`-th record first),
    // so their images are not one corner of the set that a small model could learn
    // to tell apart.
    let per_letter = if c.cot_fraction >= 1.0 { 0.0 } else { c.cot_fraction / (1.0 - c.cot_fraction) };
    let wanted = c.cot_unique.min((letters.len() as f64 * per_letter).ceil() as usize).max(1);
    let step = (letters.len() / wanted).max(1);
    let order = (0..step).flat_map(|off| (off..letters.len()).step_by(step));
    for r in order.map(|i| &letters[i]) {
        if cots.len() >= c.cot_unique {
            break;
        }
        let text = match imported.get(&r.id) {
            Some(t) => match cot_answer(t) {
                Some(a) if a == r.answer => {
                    rep.imported += 1;
                    Some(t.clone())
                }
                Some(_) => {
                    *rep.skipped.entry("imported CoT answer differs from the ground truth".into()).or_default() += 1;
                    None
                }
                None => {
                    *rep.skipped.entry("imported CoT is not <think>…</think><answer>…</answer>".into()).or_default() +=
                        1;
                    None
                }
            },
            None if imported.is_empty() => pseudo_cot_styled(r, &mut rng, c.cot_style),
            None => None,
        };
        if let Some(t) = text {
            let prompt = match &c.cot_instruction {
                Some(i) => super::qa::with_instruction(&r.prompt, i),
                None => r.prompt.clone(),
            };
            cots.push(QaRecord {
                id: format!("{}_cot", r.id),
                system: Some(c.system.clone()),
                prompt,
                response: t,
                ..r.clone()
            });
        }
    }
    rep.cot_unique = cots.len();
    let mut out = Vec::with_capacity(letters.len() + (letters.len() as f64 * per_letter) as usize + 1);
    let mut credit = 0.0;
    for r in letters {
        out.push(QaRecord { system: Some(c.system.clone()), response: r.answer.clone(), ..r.clone() });
        rep.letters += 1;
        credit += per_letter;
        while credit >= 1.0 - 1e-9 && !cots.is_empty() {
            out.push(cots[rep.cot_slots % cots.len()].clone());
            rep.cot_slots += 1;
            credit -= 1.0;
        }
    }
    (out, rep)
}
