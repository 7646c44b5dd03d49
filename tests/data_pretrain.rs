//! Pretraining data: every label follows from the scene and the photo's id buffer,
//! options are shuffled, and nothing asks about a second view.

use actial::data::pretrain::{COLOURS, TextItem, single_view, text_item, text_question};
use actial::data::render::{SceneStyle, part_coverage};
use actial::data::synth::SynthConfig;

fn option_colour(opt: &str) -> &str {
    opt.trim_start_matches("The ").trim_end_matches(" part").trim_end_matches(" face")
}

#[test]
fn single_view_labels_follow_the_geometry() {
    single_view_labels(
        SceneStyle::Parts,
        &["single_colour_seen", "single_leftmost", "single_rightmost", "single_nearest", "single_count"],
    );
}

#[test]
fn single_view_labels_follow_the_geometry_on_cubes() {
    // A cube shows two or three faces: never three clearly ordered ones often
    // enough for leftmost/rightmost among three, so only these kinds are required.
    single_view_labels(SceneStyle::Cube, &["single_colour_seen", "single_leftmost_colour", "single_count"]);
}

fn single_view_labels(scene: SceneStyle, required: &[&str]) {
    let c = SynthConfig { scene, ..SynthConfig::default() };
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let mut letters = [0usize; 3];
    for i in 0..60 {
        let v = single_view(7, i, &c);
        let cover = part_coverage(&v.scene, &v.camera);
        let visible: Vec<usize> = (0..v.scene.parts.len()).filter(|&k| cover[k].0 >= 25).collect();
        let part_of = |colour: &str| v.scene.parts.iter().position(|p| p.colour_name == colour).unwrap();
        for q in &v.questions {
            *seen.entry(q.kind.clone()).or_default() += 1;
            let correct = &q.options[q.answer];
            if q.options.len() == 3 {
                letters[q.answer] += 1;
            }
            match q.kind.as_str() {
                "single_colour_seen" => {
                    assert!(visible.contains(&part_of(correct)), "{correct} is not visible");
                    for (j, o) in q.options.iter().enumerate() {
                        if j != q.answer {
                            assert!(
                                v.scene.parts.iter().all(|p| p.colour_name != o),
                                "distractor {o} is on the object"
                            );
                        }
                    }
                }
                "single_leftmost" | "single_rightmost" => {
                    let xs: Vec<f64> = q.options.iter().map(|o| cover[part_of(option_colour(o))].1).collect();
                    let best = if q.kind == "single_leftmost" {
                        xs.iter().cloned().fold(f64::INFINITY, f64::min)
                    } else {
                        xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
                    };
                    assert_eq!(xs[q.answer], best, "{q:?}");
                }
                "single_leftmost_colour" => {
                    let left = visible.iter().min_by(|&&a, &&b| cover[a].1.total_cmp(&cover[b].1)).unwrap();
                    assert_eq!(correct, v.scene.parts[*left].colour_name);
                }
                "single_nearest" => {
                    let z = |o: &str| v.camera.pose.to_camera(v.scene.parts[part_of(option_colour(o))].center)[2];
                    let zs: Vec<f64> = q.options.iter().map(|o| z(o)).collect();
                    assert_eq!(zs[q.answer], zs.iter().cloned().fold(f64::INFINITY, f64::min));
                }
                "single_count" => {
                    let words = ["one", "two", "three", "four", "five", "six", "seven", "eight"];
                    assert_eq!(correct, words[visible.len() - 1]);
                }
                k => panic!("unexpected kind {k}"),
            }
        }
        // The description names the visible parts from left to right.
        let mut order = visible.clone();
        order.sort_by(|&a, &b| cover[a].1.total_cmp(&cover[b].1));
        let names: Vec<&str> = order.iter().map(|&k| v.scene.parts[k].colour_name).collect();
        let listed = v.description.split("From left to right: ").nth(1).unwrap();
        let mut at = 0;
        for n in names {
            let pos = listed[at..].find(n).unwrap_or_else(|| panic!("{n} missing or out of order in {listed}"));
            at += pos + n.len();
        }
    }
    for k in required {
        assert!(seen.get(*k).copied().unwrap_or(0) >= 10, "too few {k}: {seen:?}");
    }
    // Shuffled: every letter is the answer often.
    assert!(letters.iter().all(|&n| n > 20), "answer letters {letters:?}");
}

#[test]
fn text_items_are_consistent() {
    for i in 0..300 {
        let q = text_question(3, i);
        let correct = &q.options[q.answer];
        assert!((2..=4).contains(&q.options.len()));
        let distinct: std::collections::BTreeSet<_> = q.options.iter().collect();
        assert_eq!(distinct.len(), q.options.len(), "{q:?}");
        match q.kind.as_str() {
            "text_match" => assert!(q.question.ends_with(&format!("says {correct}?")), "{q:?}"),
            "text_category" if q.question.contains("colour") => assert!(COLOURS.contains(&correct.as_str())),
            "text_opposite" => {
                let w = q.question.trim_end_matches('?').rsplit(' ').next().unwrap();
                assert_ne!(w, correct);
            }
            _ => {}
        }
        match text_item(3, i) {
            TextItem::Copy(kind, prompt, response) => {
                if kind == "text_repeat" {
                    assert!(prompt.ends_with(&response));
                } else {
                    assert!(prompt.contains(&format!(": {response}")), "{prompt} / {response}");
                }
            }
            TextItem::Choice(q) => assert!(!q.options.is_empty()),
        }
    }
}

#[test]
fn fixed_order_lists_the_palette_and_counts() {
    use actial::data::qa::OptionOrder;
    let c = SynthConfig { option_order: OptionOrder::Fixed, ..SynthConfig::default() };
    let mut kinds = std::collections::BTreeSet::new();
    for i in 0..30 {
        let v = single_view(9, i, &c);
        let cover = part_coverage(&v.scene, &v.camera);
        let mut visible: Vec<usize> = (0..v.scene.parts.len()).filter(|&k| cover[k].0 >= 25).collect();
        visible.sort_by(|&a, &b| cover[a].1.total_cmp(&cover[b].1));
        for q in &v.questions {
            kinds.insert(q.kind.clone());
            let correct = &q.options[q.answer];
            match q.kind.as_str() {
                "single_count" => {
                    assert_eq!(q.options, ["one", "two", "three", "four", "five", "six"]);
                    assert_eq!(q.answer + 1, visible.len());
                }
                k => {
                    // Colour questions: the whole palette, in order; the letter is the colour's.
                    assert_eq!(q.options, COLOURS.map(String::from).to_vec(), "{k}");
                    let part = match k {
                        "single_leftmost_colour" => visible[0],
                        "single_rightmost_colour" => *visible.last().unwrap(),
                        "single_nearest_colour" => *visible
                            .iter()
                            .min_by(|&&a, &&b| {
                                let z = |i: usize| v.camera.pose.to_camera(v.scene.parts[i].center)[2];
                                z(a).total_cmp(&z(b))
                            })
                            .unwrap(),
                        other => panic!("unexpected kind {other}"),
                    };
                    assert_eq!(correct, v.scene.parts[part].colour_name, "{k}");
                }
            }
        }
    }
    assert_eq!(kinds.len(), 4, "{kinds:?}");
}

#[test]
fn fixed_order_viewpoint_and_sat_questions() {
    use actial::data::qa::OptionOrder;
    use actial::data::synth::synth_pair;
    use actial::data::viewpoint::{MOVE_OPTIONS, ROTATE_OPTIONS};
    let fixed = SynthConfig { option_order: OptionOrder::Fixed, ..SynthConfig::default() };
    for i in 0..20 {
        let p = synth_pair(5, i, &fixed);
        let shuffled = synth_pair(5, i, &SynthConfig::default());
        for (q, s) in p.viewpoint.iter().zip(&shuffled.viewpoint) {
            let want = if q.kind == "camera_rotation" { ROTATE_OPTIONS } else { MOVE_OPTIONS };
            assert_eq!(q.options, want.map(String::from).to_vec());
            // Same scene and truth: the same answer text as the shuffled version.
            assert_eq!(q.options[q.answer], s.options[s.answer]);
        }
        for (q, _) in &p.sat {
            if q.kind == "sat_nearer" {
                let rank = |o: &str| COLOURS.iter().position(|c| o.contains(&format!(" {c} "))).unwrap();
                assert!(rank(&q.options[0]) < rank(&q.options[1]), "{q:?}");
            }
        }
    }
}

#[test]
fn pair_items_ask_about_one_photo_and_follow_its_geometry() {
    use actial::data::pretrain::pair_view;
    use actial::data::qa::OptionOrder;
    let c = SynthConfig { scene: SceneStyle::KnownCube, option_order: OptionOrder::Fixed, ..SynthConfig::default() };
    let mut per_photo = [0usize; 2];
    let mut same_colour = [0usize; 2];
    for i in 0..40 {
        let v = pair_view(11, i, &c);
        for q in &v.questions {
            assert!(q.kind.starts_with("pair_"), "{}", q.kind);
            if q.kind == "pair_same_colour" {
                same_colour[q.answer] += 1;
                // Both ends re-derived from the id buffers.
                let end = |k: usize, right: bool| {
                    let cover = part_coverage(&v.scene, &v.cameras[k]);
                    let vis = (0..v.scene.parts.len()).filter(|&j| cover[j].0 >= 25);
                    let key = |a: &usize, b: &usize| cover[*a].1.total_cmp(&cover[*b].1);
                    let j = if right { vis.max_by(key) } else { vis.min_by(key) }.unwrap();
                    v.scene.parts[j].colour_name
                };
                let first_right = q.question.contains("furthest to the right in the first");
                let second_right = q.question.contains("furthest to the right in the second");
                let same = end(0, first_right) == end(1, second_right);
                assert_eq!(q.options[q.answer], if same { "Yes" } else { "No" }, "{}", q.question);
                continue;
            }
            // Never about how the camera moved: every question names one photo.
            let k = match (q.question.contains("the first photo"), q.question.contains("the second photo")) {
                (true, false) => 0,
                (false, true) => 1,
                _ => panic!("names no single photo: {}", q.question),
            };
            per_photo[k] += 1;
            let (cam, correct) = (&v.cameras[k], q.options[q.answer].as_str());
            let cover = part_coverage(&v.scene, cam);
            let visible: Vec<usize> = (0..v.scene.parts.len()).filter(|&j| cover[j].0 >= 25).collect();
            let by_x = |pick_max: bool| {
                let it = visible.iter().copied();
                let key = |a: &usize, b: &usize| cover[*a].1.total_cmp(&cover[*b].1);
                if pick_max { it.max_by(key) } else { it.min_by(key) }.unwrap()
            };
            match q.kind.as_str() {
                "pair_leftmost_colour" => assert_eq!(correct, v.scene.parts[by_x(false)].colour_name),
                "pair_rightmost_colour" => assert_eq!(correct, v.scene.parts[by_x(true)].colour_name),
                "pair_count" => {
                    assert_eq!(correct, ["one", "two", "three", "four", "five", "six"][visible.len() - 1])
                }
                "pair_nearest_colour" => {
                    let z = |j: usize| cam.pose.to_camera(v.scene.parts[j].center)[2];
                    let near = visible.iter().copied().min_by(|&a, &b| z(a).total_cmp(&z(b))).unwrap();
                    assert_eq!(correct, v.scene.parts[near].colour_name);
                }
                k => panic!("unexpected kind {k}"),
            }
        }
        assert!(v.description.starts_with("First photo: The object has "), "{}", v.description);
        assert!(v.description.contains(" Second photo: The object has "), "{}", v.description);
    }
    assert!(per_photo.iter().all(|&n| n >= 40), "questions per photo {per_photo:?}");
    assert!(same_colour.iter().all(|&n| n >= 10), "yes / no answers {same_colour:?}");
}

#[test]
fn the_known_cube_has_the_same_colour_on_each_face_in_every_scene() {
    use actial::data::render::{KNOWN_CUBE, PALETTE, random_scene_of};
    use actial::rng::Philox;
    let mut rng = Philox::new(3, 0);
    let mut yaws = Vec::new();
    for _ in 0..20 {
        let s = random_scene_of(SceneStyle::KnownCube, &mut rng);
        for (k, &ci) in KNOWN_CUBE.iter().enumerate() {
            assert_eq!(s.parts[k].colour_name, PALETTE[ci].0);
        }
        // Seen from its +x face's normal: the cube still turns from scene to scene.
        yaws.push(s.parts[0].yaw);
    }
    assert!(yaws.windows(2).any(|w| (w[0] - w[1]).abs() > 0.1), "{yaws:?}");
}

#[test]
fn perspective_items_mirror_left_and_right_for_the_object_only() {
    use actial::data::pretrain::perspective_question;
    use actial::data::qa::OptionOrder;
    let mut seen = std::collections::BTreeMap::<(String, bool, String), usize>::new();
    for order in [OptionOrder::Fixed, OptionOrder::Shuffled] {
        for i in 0..400 {
            let q = perspective_question(5, i, order);
            assert!(q.question.starts_with("An object faces a camera and does not move."), "{}", q.question);
            let correct = q.options[q.answer].as_str();
            let told =
                ["left", "right"].into_iter().find(|s| q.question.contains(&format!("to the {s} as the camera")));
            let object = q.question.contains("From the object's perspective");
            let expected = match told {
                None => if q.kind.ends_with("rotation") { "No rotation" } else { "No movement" }.to_string(),
                Some(s) => {
                    // The object faces the camera: its left is the camera's right.
                    let s = if object { if s == "left" { "right" } else { "left" } } else { s };
                    let verb = if q.kind.ends_with("rotation") { "Rotate" } else { "Move" };
                    format!("{verb} to the {s}")
                }
            };
            assert_eq!(correct, expected, "{}", q.question);
            assert!(!(object && q.kind.ends_with("rotation")), "rotation is only asked from the camera");
            if order == OptionOrder::Fixed {
                // The viewpoint questions' order: left, right, none.
                assert!(q.options[0].ends_with("left") && q.options[1].ends_with("right"), "{:?}", q.options);
            }
            *seen.entry((q.kind.clone(), object, correct.to_string())).or_default() += 1;
        }
    }
    // Every combination occurs, and often.
    assert_eq!(seen.len(), 3 + 3 + 3, "{seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "{seen:?}");
}

#[test]
fn reasoning_items_answer_in_the_think_answer_format() {
    use actial::data::mix::cot_answer;
    use actial::data::pretrain::{PretrainMix, pretrain_records};
    use actial::data::qa::REASONING_INSTRUCTION;
    let dir = std::env::temp_dir().join(format!("actial_reasoning_items_{}", std::process::id()));
    let m = PretrainMix {
        photos: 12,
        pairs: 0,
        text_items: 200,
        perspective_items: 0,
        perspective_photos: 0,
        reasoning_every: 3,
    };
    let recs = pretrain_records(&dir, 5, m, &SynthConfig::default(), &|| {}).unwrap();
    let (mut reasoning, mut letters) = (0, 0);
    for r in recs.iter().filter(|r| r.answer.len() == 1 && !r.kind.ends_with("describe")) {
        if r.prompt.ends_with(REASONING_INSTRUCTION) {
            reasoning += 1;
            // Well formed, the same letter as the answer, and the correct option's text.
            assert_eq!(cot_answer(&r.response).as_deref(), Some(r.answer.as_str()), "{}", r.response);
            let option = r
                .response
                .split(&format!("The answer is {}: ", r.answer))
                .nth(1)
                .unwrap()
                .split(".</think>")
                .next()
                .unwrap();
            assert!(
                r.prompt.contains(&format!("{}: {option}", r.answer)),
                "{option} is not option {} of {}",
                r.answer,
                r.prompt
            );
        } else {
            letters += 1;
            assert_eq!(r.response, r.answer, "letter items answer with the letter");
        }
    }
    // About a third, over photos and text items alike.
    let share = reasoning as f64 / (reasoning + letters) as f64;
    assert!((0.2..0.47).contains(&share), "{reasoning} reasoning items of {}", reasoning + letters);
    assert!(recs.iter().any(|r| r.images.len() == 1 && r.prompt.ends_with(REASONING_INSTRUCTION)));
    assert!(recs.iter().any(|r| r.images.is_empty() && r.prompt.ends_with(REASONING_INSTRUCTION)));
    let none = PretrainMix { reasoning_every: 0, ..m };
    let plain = pretrain_records(&dir, 5, none, &SynthConfig::default(), &|| {}).unwrap();
    assert!(plain.iter().all(|r| !r.prompt.ends_with(REASONING_INSTRUCTION)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn perspective_photos_mirror_the_outer_faces() {
    use actial::data::pretrain::perspective_photo;
    use actial::data::qa::OptionOrder;
    let mut asked = 0;
    for order in [OptionOrder::Fixed, OptionOrder::Shuffled] {
        let c = SynthConfig { scene: SceneStyle::KnownCube, size: 112, option_order: order, ..SynthConfig::default() };
        for i in 0..24 {
            let v = perspective_photo(9, i, &c);
            let (qs, scene, cam) = (&v.questions, &v.scene, &v.camera);
            if qs.is_empty() {
                continue;
            }
            asked += 1;
            // The outer faces, from the photo's own id buffer.
            let cover = part_coverage(scene, cam);
            let mut vis: Vec<usize> = (0..scene.parts.len()).filter(|&k| cover[k].0 >= 25).collect();
            vis.sort_by(|&a, &b| cover[a].1.total_cmp(&cover[b].1));
            let (left, right) = (scene.parts[vis[0]].colour_name, scene.parts[*vis.last().unwrap()].colour_name);
            assert_eq!(qs.len(), 2);
            let side_left = qs[0].question.ends_with("furthest to the left?");
            for q in qs {
                let object = q.question.contains("From the object's perspective");
                assert_eq!(q.kind, if object { "single_perspective_object" } else { "single_perspective_camera" });
                // Facing the camera, the object's left is the camera's right.
                let want = if side_left != object { left } else { right };
                assert_eq!(option_colour(&q.options[q.answer]), want, "{}", q.question);
                if order == OptionOrder::Shuffled {
                    let other = if want == left { right } else { left };
                    assert!(q.options.iter().any(|o| o == other), "the mirrored face is a distractor: {:?}", q.options);
                } else {
                    assert_eq!(q.options.len(), COLOURS.len());
                }
            }
            // Both questions name the same side; their answers are the two outer faces.
            assert!(qs.iter().all(|q| q.question.ends_with(if side_left { "left?" } else { "right?" })));
            assert_ne!(qs[0].options[qs[0].answer], qs[1].options[qs[1].answer]);
        }
    }
    assert!(asked >= 20, "only {asked} of 48 photos had clear outer faces");
}
