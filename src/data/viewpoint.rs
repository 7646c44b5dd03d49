//! The paper's three viewpoint questions for a pair of photos.

use super::geometry::{Side, ViewpointTruth};
use super::qa::{McQuestion, OptionOrder};
use crate::rng::Philox;

pub const Q_CAMERA_TRANSLATION: &str = "The object captured in these two photos did not move. From the camera's perspective, \
did the position of the camera that captured the second photo move relative to the first photo's camera position?";
pub const Q_OBJECT_TRANSLATION: &str = "The object captured in these two photos did not move. From the object's perspective, \
did the position of the camera that captured the second photo move relative to the first photo's camera position?";
pub const Q_CAMERA_ROTATION: &str = "The object captured in these two photos did not move. From the camera's perspective, \
did the orientation of the camera that captured the second photo rotate relative to the first photo's camera orientation?";

pub const MOVE_OPTIONS: [&str; 3] = ["Move to the left", "Move to the right", "No movement"];
pub const ROTATE_OPTIONS: [&str; 3] = ["Rotate to the left", "Rotate to the right", "No rotation"];

fn side_index(s: Side) -> usize {
    match s {
        Side::Left => 0,
        Side::Right => 1,
    }
}

/// The three questions (camera translation, object translation, camera rotation),
/// options shuffled by `rng` or in the listed order (`order`); "No movement" / "No rotation" is always a distractor.
pub fn viewpoint_questions(truth: &ViewpointTruth, order: OptionOrder, rng: &mut Philox) -> [McQuestion; 3] {
    [
        McQuestion::with_order(
            "camera_translation",
            Q_CAMERA_TRANSLATION.into(),
            &MOVE_OPTIONS,
            side_index(truth.camera_translation),
            order,
            rng,
        ),
        McQuestion::with_order(
            "object_translation",
            Q_OBJECT_TRANSLATION.into(),
            &MOVE_OPTIONS,
            side_index(truth.object_translation),
            order,
            rng,
        ),
        McQuestion::with_order(
            "camera_rotation",
            Q_CAMERA_ROTATION.into(),
            &ROTATE_OPTIONS,
            side_index(truth.camera_rotation),
            order,
            rng,
        ),
    ]
}
