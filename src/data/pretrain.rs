//! Pretraining data for the tiny base model: the general skills a real
//! Qwen2.5-VL already has before Actial starts, and nothing about how a camera
//! moved between two photos.
//!
//! - text-only multiple choice with shuffled options (copy the letter of the option
//!   whose text matches; word categories; opposites; counting order),
//! - single-photo questions about a rendered object with shuffled options (which
//!   colours are visible, which part is furthest left / right, nearest, how many
//!   parts, the colour of the leftmost part),
//! - short descriptions of a photo (parts from left to right),
//! - two photos of one object with the same questions about one of them ("... in
//!   the second photo?") and a description of each (never how the camera moved).
//!
//! Every answer comes from the scene geometry and the id buffer of the photo
//! (`render::part_coverage`), so questions only ask about parts that are visible and
//! separated by a clear margin.

use std::path::Path;

use super::qa::{ACTIAL_SYSTEM, ImageRef, LETTER_INSTRUCTION, McQuestion, OptionOrder, QaRecord};
use super::render::{Camera, Scene, orbit_camera, part_coverage, random_scene_of, render};
use super::synth::SynthConfig;
use crate::error::{Error, Result};
use crate::rng::Philox;

/// A part counts as visible from this many pixels (of 112x112).
const MIN_PIXELS: usize = 25;
/// Left/right answers need the two parts' visible centroids this far apart
/// (fraction of the width).
const MIN_DU: f64 = 0.08;
/// Nearest answers need this depth margin (fraction of the object radius).
const MIN_DZ: f64 = 0.25;

pub const COLOURS: [&str; 7] = ["red", "green", "blue", "yellow", "orange", "purple", "cyan"];
const DIRECTIONS: [&str; 6] = ["left", "right", "up", "down", "front", "back"];
const SHAPES: [&str; 6] = ["cube", "ball", "box", "cone", "ring", "block"];
const NUMBERS: [&str; 8] = ["one", "two", "three", "four", "five", "six", "seven", "eight"];
const ANIMALS: [&str; 6] = ["cat", "dog", "bird", "fish", "horse", "mouse"];
const CATEGORIES: [(&str, &[&str]); 5] =
    [("colour", &COLOURS), ("direction", &DIRECTIONS), ("shape", &SHAPES), ("number", &NUMBERS), ("animal", &ANIMALS)];
const OPPOSITES: [(&str, &str); 8] = [
    ("left", "right"),
    ("up", "down"),
    ("front", "back"),
    ("near", "far"),
    ("first", "second"),
    ("clockwise", "counterclockwise"),
    ("big", "small"),
    ("open", "closed"),
];

fn pick<'a>(xs: &[&'a str], rng: &mut Philox) -> &'a str {
    xs[(rng.next_u32() as usize) % xs.len()]
}

/// `k` distinct words from `pool` that are not in `avoid`.
fn distinct<'a>(pool: &[&'a str], avoid: &[&str], k: usize, rng: &mut Philox) -> Vec<&'a str> {
    let mut left: Vec<&str> = pool.iter().copied().filter(|w| !avoid.contains(w)).collect();
    let mut out = Vec::new();
    while out.len() < k && !left.is_empty() {
        out.push(left.remove((rng.next_u32() as usize) % left.len()));
    }
    out
}

/// A question whose correct option is `correct` among `distractors`, shuffled.
fn mc(kind: &str, question: String, correct: &str, distractors: &[&str], rng: &mut Philox) -> McQuestion {
    let mut opts = vec![correct];
    opts.extend_from_slice(distractors);
    McQuestion::shuffled(kind, question, &opts, 0, rng)
}

/// A text-only item: a multiple-choice question (answered with its letter) or a
/// copy exercise (answered with text).
pub enum TextItem {
    Choice(McQuestion),
    /// (kind, prompt, response)
    Copy(&'static str, String, String),
}

/// Text item number `index` of stream `seed`. Half are copy exercises with
/// dense supervision (repeat a list of words; say what option X says): copying
/// from the context is the skill a tiny model lacks, and multiple choice answers
/// need it (find the option whose text matches, output its letter).
pub fn text_item(seed: u64, index: u64) -> TextItem {
    let mut rng = Philox::new(seed ^ 0x7e47_0001, index);
    let all: Vec<&str> = CATEGORIES.iter().flat_map(|(_, ws)| ws.iter().copied()).collect();
    match rng.next_u32() % 4 {
        0 => {
            let n = 3 + (rng.next_u32() as usize) % 6;
            let words: Vec<&str> = (0..n).map(|_| pick(&all, &mut rng)).collect();
            TextItem::Copy("text_repeat", format!("Repeat these words: {}", words.join(" ")), words.join(" "))
        }
        1 => {
            let n_opts = 2 + (rng.next_u32() as usize) % 3;
            let words = distinct(&all, &[], n_opts, &mut rng);
            let which = (rng.next_u32() as usize) % words.len();
            let q = McQuestion {
                kind: String::new(),
                question: String::new(),
                options: words.iter().map(|w| w.to_string()).collect(),
                answer: which,
            };
            let letter = q.letter();
            let prompt = format!("What does option {letter} say?{}", q.prompt("").trim_end());
            TextItem::Copy("text_option_text", prompt, words[which].to_string())
        }
        _ => TextItem::Choice(text_question(seed, index)),
    }
}

/// Text-only multiple choice number `index` of stream `seed`, with 2 to 4 options.
pub fn text_question(seed: u64, index: u64) -> McQuestion {
    let mut rng = Philox::new(seed ^ 0x7e47_0000, index);
    let n_opts = 2 + (rng.next_u32() as usize) % 3;
    let all: Vec<&str> = CATEGORIES.iter().flat_map(|(_, ws)| ws.iter().copied()).collect();
    match rng.next_u32() % 4 {
        0 => {
            // Pure copy: the option that says the word.
            let w = pick(&all, &mut rng);
            let d = distinct(&all, &[w], n_opts - 1, &mut rng);
            mc("text_match", format!("Which option says {w}?"), w, &d, &mut rng)
        }
        1 => {
            let ci = (rng.next_u32() as usize) % CATEGORIES.len();
            let (cat, words) = CATEGORIES[ci];
            let w = pick(words, &mut rng);
            let others: Vec<&str> = CATEGORIES
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != ci)
                .flat_map(|(_, (_, ws))| ws.iter().copied())
                .collect();
            let d = distinct(&others, &[], n_opts - 1, &mut rng);
            mc("text_category", format!("Which of these is a {cat}?"), w, &d, &mut rng)
        }
        2 => {
            let (a, b) = OPPOSITES[(rng.next_u32() as usize) % OPPOSITES.len()];
            let (w, o) = if rng.next_u32().is_multiple_of(2) { (a, b) } else { (b, a) };
            let pool: Vec<&str> = OPPOSITES.iter().flat_map(|&(x, y)| [x, y]).collect();
            let d = distinct(&pool, &[w, o], n_opts - 1, &mut rng);
            mc("text_opposite", format!("What is the opposite of {w}?"), o, &d, &mut rng)
        }
        _ => {
            let i = (rng.next_u32() as usize) % (NUMBERS.len() - 1);
            let d = distinct(&NUMBERS, &[NUMBERS[i], NUMBERS[i + 1]], n_opts - 1, &mut rng);
            mc("text_next_number", format!("Which number comes after {}?", NUMBERS[i]), NUMBERS[i + 1], &d, &mut rng)
        }
    }
}

/// Perspective item number `index` of stream `seed`: text only, no images, the
/// language a viewpoint question is written in. A camera's move is stated in words
/// ("slides to the left as the camera sees it") and the question asks it from the
/// camera's or the object's perspective: facing the camera, the object's left is
/// the camera's right. What a real base model knows from language; nothing here
/// says how a camera moved between two photos (issue #9). Options as the
/// viewpoint questions list them, in `order`.
pub fn perspective_question(seed: u64, index: u64, order: OptionOrder) -> McQuestion {
    let mut rng = Philox::new(seed ^ 0x9e75_0000, index);
    let side = ["left", "right"][(rng.next_u32() % 2) as usize];
    let mirror = if side == "left" { "right" } else { "left" };
    let still = rng.next_u32().is_multiple_of(8);
    let opener = "An object faces a camera and does not move.";
    match rng.next_u32() % 3 {
        2 => {
            let (told, correct) = if still {
                ("The camera does not turn.".to_string(), 2)
            } else {
                (format!("The camera turns to the {side} as the camera sees it."), usize::from(side == "right"))
            };
            let q = format!("{opener} {told} From the camera's perspective, did the orientation of the camera rotate?");
            let opts = ["Rotate to the left", "Rotate to the right", "No rotation"];
            McQuestion::with_order("text_perspective_rotation", q, &opts, correct, order, &mut rng)
        }
        k => {
            let object = k == 1;
            let answer = if object { mirror } else { side };
            let (told, correct) = if still {
                ("The camera stays where it is.".to_string(), 2)
            } else {
                (format!("The camera slides to the {side} as the camera sees it."), usize::from(answer == "right"))
            };
            let q = format!(
                "{opener} {told} From the {}'s perspective, did the position of the camera move?",
                if object { "object" } else { "camera" }
            );
            let opts = ["Move to the left", "Move to the right", "No movement"];
            McQuestion::with_order("text_perspective_translation", q, &opts, correct, order, &mut rng)
        }
    }
}

/// One photo of a random object with its questions and description.
pub struct SingleView {
    pub scene: Scene,
    pub camera: super::render::Camera,
    pub image: image::RgbImage,
    pub questions: Vec<McQuestion>,
    pub description: String,
}

fn colour_name(scene: &Scene, i: usize) -> &'static str {
    scene.parts[i].colour_name
}

/// "red, green and blue" ("" for none).
pub(crate) fn join_words<S: AsRef<str>>(ws: &[S]) -> String {
    let ws: Vec<&str> = ws.iter().map(AsRef::as_ref).collect();
    match ws.as_slice() {
        [] => String::new(),
        [a] => a.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// How questions about a lone photo name it.
const SINGLE_PHOTO: &str = "the photo";

/// What one photo's questions and description are built from.
struct ViewFacts {
    questions: Vec<McQuestion>,
    /// Visible parts' colours from left to right.
    names: Vec<&'static str>,
    /// The colours of the parts furthest left and right, where a clear margin
    /// separates them from the next part.
    leftmost: Option<&'static str>,
    rightmost: Option<&'static str>,
}

/// What the photo `cam` takes of `scene` shows: each part's coverage, the visible
/// parts from left to right, and the colours of the outermost ones where a clear
/// margin separates them from the next part.
struct Layout {
    cover: Vec<(usize, f64)>,
    visible: Vec<usize>,
    leftmost: Option<&'static str>,
    rightmost: Option<&'static str>,
}

fn layout(scene: &Scene, cam: &Camera, w: f64) -> Layout {
    let cover = part_coverage(scene, cam);
    let mut visible: Vec<usize> = (0..scene.parts.len()).filter(|&i| cover[i].0 >= MIN_PIXELS).collect();
    visible.sort_by(|&a, &b| cover[a].1.total_cmp(&cover[b].1));
    let n = visible.len();
    let clear = |a: usize, b: usize| (cover[b].1 - cover[a].1) / w >= MIN_DU;
    let leftmost = (n >= 2 && clear(visible[0], visible[1])).then(|| colour_name(scene, visible[0]));
    let rightmost = (n >= 2 && clear(visible[n - 2], visible[n - 1])).then(|| colour_name(scene, visible[n - 1]));
    Layout { cover, visible, leftmost, rightmost }
}

/// The questions about the photo `cam` takes of `scene` (named `photo` in them),
/// and its visible parts from left to right.
fn view_facts(scene: &Scene, cam: &Camera, c: &SynthConfig, photo: &str, qrng: &mut Philox) -> ViewFacts {
    let w = c.size as f64;
    let Layout { cover, visible, leftmost, rightmost } = layout(scene, cam, w);
    let questions = match c.option_order {
        OptionOrder::Shuffled => shuffled_questions(scene, cam, &cover, &visible, w, photo, qrng),
        OptionOrder::Fixed => fixed_questions(scene, cam, &cover, &visible, w, photo),
    };
    ViewFacts { questions, names: visible.iter().map(|&i| colour_name(scene, i)).collect(), leftmost, rightmost }
}

/// "The object has three visible faces. From left to right: red, orange and green."
fn describe(scene: &Scene, names: &[&str]) -> String {
    let n = names.len();
    format!(
        "The object has {} visible {}. From left to right: {}.",
        NUMBERS[n.clamp(1, NUMBERS.len()) - 1],
        if n == 1 { scene.noun.to_string() } else { format!("{}s", scene.noun) },
        join_words(names)
    )
}

/// A camera anywhere on the orbit of `scene`.
fn random_orbit_camera(scene: &Scene, c: &SynthConfig, rng: &mut Philox) -> Camera {
    let mut u = |lo: f64, hi: f64| lo + (hi - lo) * rng.uniform() as f64;
    let frame = scene.radius / (c.fov_deg.to_radians() / 2.0).tan();
    orbit_camera(
        u(0.0, 360.0),
        u(c.pitch_range().0, c.pitch_range().1),
        frame * u(c.distance.0, c.distance.1),
        scene.target,
        c.size,
        c.fov_deg,
    )
}

/// Photo number `index` of stream `seed`: the camera stands anywhere on the orbit.
pub fn single_view(seed: u64, index: u64, c: &SynthConfig) -> SingleView {
    let mut rng = Philox::new(seed ^ 0x5179_1e00, index);
    let scene = random_scene_of(c.scene, &mut rng);
    let cam = random_orbit_camera(&scene, c, &mut rng);
    let image = render(&scene, &cam, c.supersample);
    let mut qrng = Philox::new(seed ^ 0x5179_1e01, index);
    let f = view_facts(&scene, &cam, c, SINGLE_PHOTO, &mut qrng);
    let description = describe(&scene, &f.names);
    SingleView { scene, camera: cam, image, questions: f.questions, description }
}

/// Perspective photo number `index` of stream `seed`: one photo, asked from the
/// camera's and from the object's perspective which colour is furthest to one
/// side ("From the object's perspective, what colour is the face furthest to the
/// left?"). Facing the camera, the object's left is the camera's right, so the two
/// answers are the photo's two outer faces: the same visual left/right read out
/// through the perspective word of the viewpoint questions. One photo, no camera
/// motion (issue #9); no questions when the outer faces lack a clear margin (the
/// description stays empty).
pub fn perspective_photo(seed: u64, index: u64, c: &SynthConfig) -> SingleView {
    let mut rng = Philox::new(seed ^ 0x9e75_1e00, index);
    let scene = random_scene_of(c.scene, &mut rng);
    let cam = random_orbit_camera(&scene, c, &mut rng);
    let image = render(&scene, &cam, c.supersample);
    let l = layout(&scene, &cam, c.size as f64);
    let (Some(camera_left), Some(camera_right)) = (l.leftmost, l.rightmost) else {
        return SingleView { scene, camera: cam, image, questions: Vec::new(), description: String::new() };
    };
    let side = ["left", "right"][(rng.next_u32() % 2) as usize];
    let noun = scene.noun;
    // The camera's far left is the object's far right.
    let qs = [("camera", side == "left"), ("object", side == "right")]
        .into_iter()
        .map(|(who, cameras_left)| {
            let correct = if cameras_left { camera_left } else { camera_right };
            let q = format!(
                "The object in the photo does not move. From the {who}'s perspective, what colour is the {noun} furthest to the {side}?"
            );
            let kind = format!("single_perspective_{who}");
            match c.option_order {
                OptionOrder::Fixed => {
                    let k = COLOURS.iter().position(|x| *x == correct).expect("palette colour");
                    McQuestion::with_order(&kind, q, &COLOURS, k, OptionOrder::Fixed, &mut rng)
                }
                // The other outer face is always a distractor: the perspective word decides.
                OptionOrder::Shuffled => {
                    let other = if cameras_left { camera_right } else { camera_left };
                    let d = distinct(&COLOURS, &[correct, other], 1, &mut rng);
                    mc(&kind, q, correct, &[other, d[0]], &mut rng)
                }
            }
        })
        .collect();
    SingleView { scene, camera: cam, image, questions: qs, description: String::new() }
}

/// Two photos of one object with questions about each photo on its own and a
/// description of both. Nothing relates the two cameras: the orbit positions are
/// drawn independently and no question asks how the camera moved (issue #9), but
/// the model learns to tell "the first photo" from "the second" in a two-image
/// prompt, which the viewpoint questions build on.
pub struct PairView {
    pub scene: Scene,
    pub cameras: [Camera; 2],
    pub images: [image::RgbImage; 2],
    /// Questions about one of the photos (kind `pair_*`, the photo named in the text).
    pub questions: Vec<McQuestion>,
    pub description: String,
}

/// Pair number `index` of stream `seed`.
pub fn pair_view(seed: u64, index: u64, c: &SynthConfig) -> PairView {
    let mut rng = Philox::new(seed ^ 0x5a17_0000, index);
    let scene = random_scene_of(c.scene, &mut rng);
    let cameras = [random_orbit_camera(&scene, c, &mut rng), random_orbit_camera(&scene, c, &mut rng)];
    let images = [render(&scene, &cameras[0], c.supersample), render(&scene, &cameras[1], c.supersample)];
    let mut qrng = Philox::new(seed ^ 0x5a17_0001, index);
    let mut questions = Vec::new();
    let mut parts = Vec::new();
    let mut ends = Vec::new();
    for (cam, (photo, title)) in
        cameras.iter().zip([("the first photo", "First photo"), ("the second photo", "Second photo")])
    {
        let f = view_facts(&scene, cam, c, photo, &mut qrng);
        questions.extend(f.questions.into_iter().map(|mut q| {
            q.kind = q.kind.replacen("single_", "pair_", 1);
            q
        }));
        parts.push(format!("{title}: {}", describe(&scene, &f.names)));
        ends.push([f.leftmost, f.rightmost]);
    }
    // Comparisons across the photos: is the part at one end of the first photo the
    // same colour as the part at one end of the second? One answer needs both
    // photos at once (a colour comparison, not how the camera moved).
    let side = ["furthest to the left", "furthest to the right"];
    for (a, b) in [(0, 0), (1, 1), (1, 0), (0, 1)] {
        if let (Some(x), Some(y)) = (ends[0][a], ends[1][b]) {
            let q = format!(
                "Is the {noun} {} in the first photo the same colour as the {noun} {} in the second photo?",
                side[a],
                side[b],
                noun = scene.noun
            );
            let same = usize::from(x != y);
            questions.push(McQuestion::with_order(
                "pair_same_colour",
                q,
                &["Yes", "No"],
                same,
                c.option_order,
                &mut qrng,
            ));
        }
    }
    PairView { scene, cameras, images, questions, description: parts.join(" ") }
}

/// The counts of a pretraining set.
#[derive(Clone, Copy, Debug)]
pub struct PretrainMix {
    /// Rendered photos (each gives its questions and a description).
    pub photos: u64,
    /// Rendered two-photo items ([`pair_view`]: questions about one photo of two,
    /// a description of both).
    pub pairs: u64,
    pub text_items: u64,
    /// Text-only perspective items ([`perspective_question`]).
    pub perspective_items: u64,
    /// Rendered photos asked from both perspectives ([`perspective_photo`]).
    pub perspective_photos: u64,
    /// Every this-many-th multiple-choice item (0: none) asks for reasoning
    /// (`qa::REASONING_INSTRUCTION`) and answers `<think>The answer is X: option.
    /// </think><answer>X</answer>`: the answer format a real base model follows
    /// when asked, which the tiny base otherwise never sees outside viewpoint
    /// CoTs, so GRPO on other questions would earn no format reward.
    pub reasoning_every: u64,
}

/// `q` asking for reasoning first, answered in the `<think>…</think><answer>X</answer>` form.
fn reasoning_record(id: String, q: &McQuestion, images: Vec<ImageRef>) -> QaRecord {
    let prefix = "<image>".repeat(images.len());
    let letter = q.letter();
    let response = format!("<think>The answer is {letter}: {}.</think><answer>{letter}</answer>", q.options[q.answer]);
    record(
        id,
        &q.kind,
        format!("{prefix}{}", q.prompt(super::qa::REASONING_INSTRUCTION)),
        images,
        response,
        letter.into(),
    )
}

fn record(id: String, kind: &str, prompt: String, images: Vec<ImageRef>, response: String, answer: String) -> QaRecord {
    QaRecord { id, kind: kind.into(), system: None, prompt, images, response, answer, meta: serde_json::Value::Null }
}

fn mc_record(id: String, q: &McQuestion, images: Vec<ImageRef>) -> QaRecord {
    let prefix = "<image>".repeat(images.len());
    record(
        id,
        &q.kind,
        format!("{prefix}{}", q.prompt(LETTER_INSTRUCTION)),
        images,
        q.letter().into(),
        q.letter().into(),
    )
}

/// Renders the photos into `img_dir` (in parallel; `on_photo` ticks progress) and
/// returns the records: every photo's questions and description, then the text
/// items.
pub fn pretrain_records(
    img_dir: &Path,
    seed: u64,
    m: PretrainMix,
    c: &SynthConfig,
    on_photo: &(dyn Fn() + Sync),
) -> Result<Vec<QaRecord>> {
    use rayon::prelude::*;
    std::fs::create_dir_all(img_dir).map_err(|e| Error::Io { path: img_dir.display().to_string(), source: e })?;
    // Which items ask for reasoning: a hash of the id, so the choice does not
    // depend on rayon's order and spreads over kinds and photos.
    let reasoning = |id: &str| {
        m.reasoning_every > 0 && {
            let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
            h % m.reasoning_every == 0
        }
    };
    // One rendered item (one or two photos): its questions, then its description.
    let item_records =
        |id: String, images: &[image::RgbImage], qs: &[McQuestion], kind: &str, ask: &str, desc: String| {
            let mut img = Vec::new();
            for (k, image) in images.iter().enumerate() {
                let name = if images.len() == 1 { format!("{id}.png") } else { format!("{id}_{}.png", ["a", "b"][k]) };
                let path = img_dir.join(name);
                image.save(&path).map_err(|e| crate::arg_err!("pretrain", "{}: {e}", path.display()))?;
                img.push(ImageRef::Path(path));
            }
            let mut out: Vec<QaRecord> = qs
                .iter()
                .map(|q| {
                    let qid = format!("{id}_{}", q.kind);
                    if reasoning(&qid) { reasoning_record(qid, q, img.clone()) } else { mc_record(qid, q, img.clone()) }
                })
                .collect();
            let prompt = format!("{}{ask}", "<image>".repeat(img.len()));
            out.push(record(format!("{id}_describe"), kind, prompt, img, desc.clone(), desc));
            on_photo();
            Ok(out)
        };
    let per_photo: Vec<Vec<QaRecord>> = (0..m.photos)
        .into_par_iter()
        .map(|i| {
            let v = single_view(seed, i, c);
            let ask = "Describe the object in the photo.";
            item_records(format!("photo{i:06}"), &[v.image], &v.questions, "single_describe", ask, v.description)
        })
        .collect::<Result<_>>()?;
    let per_pair: Vec<Vec<QaRecord>> = (0..m.pairs)
        .into_par_iter()
        .map(|i| {
            let v = pair_view(seed, i, c);
            let ask = "Describe the object in each photo.";
            item_records(format!("pair{i:06}"), &v.images, &v.questions, "pair_describe", ask, v.description)
        })
        .collect::<Result<_>>()?;
    let per_perspective: Vec<Vec<QaRecord>> = (0..m.perspective_photos)
        .into_par_iter()
        .map(|i| {
            let SingleView { image, questions: qs, .. } = perspective_photo(seed, i, c);
            let id = format!("persp_photo{i:06}");
            on_photo();
            if qs.is_empty() {
                return Ok(Vec::new());
            }
            let path = img_dir.join(format!("{id}.png"));
            image.save(&path).map_err(|e| crate::arg_err!("pretrain", "{}: {e}", path.display()))?;
            Ok(qs
                .iter()
                .map(|q| {
                    let qid = format!("{id}_{}", q.kind);
                    let img = vec![ImageRef::Path(path.clone())];
                    if reasoning(&qid) { reasoning_record(qid, q, img) } else { mc_record(qid, q, img) }
                })
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut recs: Vec<QaRecord> = per_photo.into_iter().chain(per_pair).chain(per_perspective).flatten().collect();
    // A quarter carry Actial's system prompt (answers unchanged), so the base reads
    // questions the same way under the prompt the later stages use.
    let with_system = |mut r: QaRecord, i: usize| {
        if i % 4 == 3 {
            r.system = Some(ACTIAL_SYSTEM.to_string());
        }
        r
    };
    recs = recs.into_iter().enumerate().map(|(i, r)| with_system(r, i)).collect();
    recs.extend(
        (0..m.text_items)
            .map(|i| match text_item(seed, i) {
                TextItem::Choice(q) if reasoning(&format!("text{i:07}")) => {
                    reasoning_record(format!("text{i:07}"), &q, vec![])
                }
                TextItem::Choice(q) => mc_record(format!("text{i:07}"), &q, vec![]),
                TextItem::Copy(kind, prompt, response) => {
                    record(format!("text{i:07}"), kind, prompt, vec![], response.clone(), response)
                }
            })
            .enumerate()
            .map(|(i, r)| with_system(r, i)),
    );
    recs.extend((0..m.perspective_items).map(|i| {
        let q = perspective_question(seed, i, c.option_order);
        with_system(mc_record(format!("persp{i:07}"), &q, vec![]), i as usize)
    }));
    Ok(recs)
}

/// True when some part shows a sliver (fewer than four times the visibility
/// threshold but more than none): whether it "can be seen" is then a matter of
/// opinion, so no count question is asked about the photo.
fn count_is_ambiguous(cover: &[(usize, f64)]) -> bool {
    cover.iter().any(|&(k, _)| k > 0 && k < 4 * MIN_PIXELS)
}

/// " in the first photo" for a question about one of two photos; nothing for a
/// single photo (the committed base learned "nearest to the camera?" that way).
fn nearest_suffix(photo: &str) -> String {
    if photo == SINGLE_PHOTO { String::new() } else { format!(" in {photo}") }
}

/// The paper-style questions: options shuffled, distractors drawn at random.
fn shuffled_questions(
    scene: &Scene,
    cam: &Camera,
    cover: &[(usize, f64)],
    visible: &[usize],
    w: f64,
    photo: &str,
    qrng: &mut Philox,
) -> Vec<McQuestion> {
    let mut qs = Vec::new();
    let noun = scene.noun;
    let part = |i: usize| format!("The {} {noun}", colour_name(scene, i));

    // A visible colour among colours the object does not have.
    let present: Vec<&str> = scene.parts.iter().map(|p| p.colour_name).collect();
    if !visible.is_empty() {
        let shown = colour_name(scene, visible[(qrng.next_u32() as usize) % visible.len()]);
        let d = distinct(&COLOURS, &present, 2, qrng);
        if d.len() == 2 {
            qs.push(mc("single_colour_seen", format!("Which colour can be seen in {photo}?"), shown, &d, qrng));
        }
    }
    // Three visible parts: furthest left / right, nearest, and the leftmost's colour.
    if visible.len() >= 3 {
        let chosen = {
            let mut idx = visible.to_vec();
            while idx.len() > 3 {
                idx.remove((qrng.next_u32() as usize) % idx.len());
            }
            idx // still sorted left to right
        };
        let names: Vec<String> = chosen.iter().map(|&i| part(i)).collect();
        let (l, m, r) = (chosen[0], chosen[1], chosen[2]);
        if (cover[m].1 - cover[l].1) / w >= MIN_DU {
            let d = [names[1].as_str(), names[2].as_str()];
            qs.push(mc(
                "single_leftmost",
                format!("Which {noun} is furthest to the left in {photo}?"),
                &names[0],
                &d,
                qrng,
            ));
        }
        if (cover[r].1 - cover[m].1) / w >= MIN_DU {
            let d = [names[0].as_str(), names[1].as_str()];
            qs.push(mc(
                "single_rightmost",
                format!("Which {noun} is furthest to the right in {photo}?"),
                &names[2],
                &d,
                qrng,
            ));
        }
        let mut by_depth: Vec<(f64, usize)> =
            chosen.iter().map(|&i| (cam.pose.to_camera(scene.parts[i].center)[2], i)).collect();
        by_depth.sort_by(|a, b| a.0.total_cmp(&b.0));
        if by_depth[1].0 - by_depth[0].0 >= MIN_DZ * scene.radius {
            let near = part(by_depth[0].1);
            let d = [part(by_depth[1].1), part(by_depth[2].1)];
            let q = format!("Which {noun} is nearest to the camera{}?", nearest_suffix(photo));
            qs.push(mc("single_nearest", q, &near, &[&d[0], &d[1]], qrng));
        }
    }
    // The colour of the leftmost visible part (of all of them, not of three).
    if visible.len() >= 2 && (cover[visible[1]].1 - cover[visible[0]].1) / w >= MIN_DU {
        let left = colour_name(scene, visible[0]);
        let others = distinct(&COLOURS, &[left], 2, qrng);
        qs.push(mc(
            "single_leftmost_colour",
            format!("What colour is the {noun} furthest to the left in {photo}?"),
            left,
            &others,
            qrng,
        ));
    }
    // How many parts can be seen (options: three consecutive counts around it).
    let n = visible.len();
    if (1..=6).contains(&n) && !count_is_ambiguous(cover) {
        let lo = n.saturating_sub(1 + (qrng.next_u32() as usize) % 2).max(1);
        let opts: Vec<String> = (lo..lo + 3).map(|k| NUMBERS[k - 1].to_string()).collect();
        let o: Vec<&str> = opts.iter().map(String::as_str).collect();
        let correct = n - lo;
        qs.push(McQuestion::shuffled(
            "single_count",
            format!("How many coloured {noun}s can be seen in {photo}?"),
            &o,
            correct,
            qrng,
        ));
    }
    qs
}

/// The tiny preset's fixed-order questions (`OptionOrder::Fixed`): colour answers
/// list the whole palette in palette order, counts list one to six, so the letter
/// is a function of the answer.
fn fixed_questions(
    scene: &Scene,
    cam: &Camera,
    cover: &[(usize, f64)],
    visible: &[usize],
    w: f64,
    photo: &str,
) -> Vec<McQuestion> {
    let mut qs = Vec::new();
    let mut none = Philox::new(0, 0); // unused: fixed order draws nothing
    let noun = scene.noun;
    let colour_q = |kind: &str, q: String, i: usize, rng: &mut Philox| {
        let correct = COLOURS.iter().position(|c| *c == colour_name(scene, i)).expect("palette colour");
        McQuestion::with_order(kind, q, &COLOURS, correct, OptionOrder::Fixed, rng)
    };
    let n = visible.len();
    if n >= 2 && (cover[visible[1]].1 - cover[visible[0]].1) / w >= MIN_DU {
        qs.push(colour_q(
            "single_leftmost_colour",
            format!("What colour is the {noun} furthest to the left in {photo}?"),
            visible[0],
            &mut none,
        ));
    }
    if n >= 2 && (cover[visible[n - 1]].1 - cover[visible[n - 2]].1) / w >= MIN_DU {
        qs.push(colour_q(
            "single_rightmost_colour",
            format!("What colour is the {noun} furthest to the right in {photo}?"),
            visible[n - 1],
            &mut none,
        ));
    }
    let mut by_depth: Vec<(f64, usize)> =
        visible.iter().map(|&i| (cam.pose.to_camera(scene.parts[i].center)[2], i)).collect();
    by_depth.sort_by(|a, b| a.0.total_cmp(&b.0));
    if by_depth.len() >= 2 && by_depth[1].0 - by_depth[0].0 >= MIN_DZ * scene.radius {
        qs.push(colour_q(
            "single_nearest_colour",
            format!("What colour is the {noun} nearest to the camera{}?", nearest_suffix(photo)),
            by_depth[0].1,
            &mut none,
        ));
    }
    if (1..=6).contains(&n) && !count_is_ambiguous(cover) {
        let counts = &NUMBERS[..6];
        qs.push(McQuestion::with_order(
            "single_count",
            format!("How many coloured {noun}s can be seen in {photo}?"),
            counts,
            n - 1,
            OptionOrder::Fixed,
            &mut none,
        ));
    }
    qs
}
