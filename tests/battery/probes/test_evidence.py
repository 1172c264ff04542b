"""Dose-matched interventions on a stand-in model whose answers are a known function of the pixels."""

import numpy as np

from auditsvc.battery.probes import evidence, properties
from auditsvc.battery.probes.evidence import ProbeData, locate, matched_dose, on_part, place_of, run_interventions


def grey_images(levels: np.ndarray, size: int = 16) -> np.ndarray:
    rng = np.random.default_rng(1)
    base = levels[:, None, None, None] + rng.normal(0, 0.02, (len(levels), size, size, 3))
    return (np.clip(base, 0, 1) * 255).round().astype(np.uint8)


def probe(images: np.ndarray, labels: np.ndarray, predict) -> ProbeData:
    predictions, probabilities = predict(images)
    return ProbeData(properties.measure(images), labels, predictions, probabilities,
                     np.full((len(images), 4), np.nan), True, lambda idx: images[np.asarray(idx)], predict, seed=0)


def follows_brightness(pixels: np.ndarray):
    predictions = (pixels.mean(axis=(1, 2, 3)) / 255 > 0.5).astype(int)
    return predictions, np.ones(len(pixels))


def test_matched_dose_is_the_typical_value_of_the_class_with_most_or_least():
    values = np.array([1.0, 2.0, 3.0, 10.0, 11.0, 12.0] * 4)
    predictions = np.array([0, 0, 0, 1, 1, 1] * 4)
    assert matched_dose(values, predictions, up=True) == (1, 11.0)
    assert matched_dose(values, predictions, up=False) == (0, 2.0)
    assert matched_dose(values, np.zeros_like(predictions), up=True) is None  # one class: nothing to match


def test_a_model_that_follows_brightness_is_converted_and_one_that_does_not_is_left_alone():
    rng = np.random.default_rng(0)
    levels = rng.uniform(0.3, 0.7, 120)
    labels = rng.integers(0, 2, 120)
    images = grey_images(levels)
    tests = {t.name: t for t in run_interventions(probe(images, labels, follows_brightness))}
    brighter, darker = tests["brighter"], tests["darker"]
    # Only images predicted as the other class are treated, and moving them to the typical brightness
    # of the bright class converts them.
    assert brighter.treated > 40 and brighter.flip_rate > 0.9 and brighter.top_class == 1 and brighter.agrees
    assert darker.flip_rate > 0.9 and darker.top_class == 0 and darker.agrees
    assert brighter.floor < 0.05



def follows_the_object(pixels: np.ndarray):
    """Answers by the brightness of the object in the middle of the image."""
    return (pixels[:, 4:12, 4:12].mean(axis=(1, 2, 3)) / 255 > 0.5).astype(int), np.ones(len(pixels))


def test_with_boxes_a_change_of_the_scene_leaves_the_object_as_it_is():
    rng = np.random.default_rng(0)
    levels, labels = rng.uniform(0.3, 0.7, 120), rng.integers(0, 2, 120)
    images = grey_images(levels)
    unboxed = probe(images, labels, follows_the_object)
    assert {t.name: t for t in run_interventions(unboxed)}["brighter"].flip_rate > 0.9
    boxed = ProbeData(**{**vars(unboxed), "boxes": np.tile([4.0, 4.0, 12.0, 12.0], (len(images), 1))})
    brighter = {t.name: t for t in run_interventions(boxed)}["brighter"]
    original, changed = brighter.pairs
    assert (changed[:, 4:12, 4:12] == original[:, 4:12, 4:12]).all()
    assert (changed[:, :4].astype(int) > original[:, :4]).all()   # the scene around it did change
    assert brighter.treated > 40 and brighter.flip_rate == 0.0


def follows_gradient(pixels: np.ndarray):
    """Answers by which side of the image is lighter, whatever the overall brightness."""
    halves = pixels.astype(float).reshape(len(pixels), pixels.shape[1], 2, -1)
    predictions = (halves[:, :, 1].mean(axis=(1, 2)) > halves[:, :, 0].mean(axis=(1, 2))).astype(int)
    return predictions, np.ones(len(pixels))


def test_a_model_that_ignores_brightness_gets_a_small_dose_and_no_flips():
    rng = np.random.default_rng(0)
    levels, labels = rng.uniform(0.3, 0.7, 120), rng.integers(0, 2, 120)
    ramp = np.linspace(-0.1, 0.1, 16)[None, None, :, None] * np.where(labels, 1, -1)[:, None, None, None]
    images = (np.clip(levels[:, None, None, None] + ramp + np.zeros((1, 16, 16, 3)), 0, 1) * 255).astype(np.uint8)
    data = probe(images, labels, follows_gradient)
    assert (data.predictions == labels).all()
    tests = {t.name: t for t in run_interventions(data)}
    brightness = data.values["brightness"]
    spread = np.quantile(brightness, 0.9) - np.quantile(brightness, 0.1)
    assert abs(tests["brighter"].target - np.median(brightness)) < 0.25 * spread
    assert tests["brighter"].flip_rate <= 0.05 and tests["darker"].flip_rate <= 0.05


def test_a_pasted_border_is_only_tried_on_images_not_already_answered_as_the_donors_class():
    rng = np.random.default_rng(0)
    images = grey_images(rng.uniform(0.3, 0.7, 100))
    framed = np.arange(100) < 70          # most images carry the frame, so the median lies among them
    images[framed, :2], images[framed, -2:], images[framed, :, :2], images[framed, :, -2:] = 255, 255, 255, 255

    def follows_frame(pixels):
        return (pixels[:, 0, 8].mean(axis=1) > 250).astype(int), np.ones(len(pixels))

    data = probe(images, framed.astype(int), follows_frame)
    swap = next(t for t in run_interventions(data) if t.name == "swap_border")
    assert swap.treated == 30 and swap.flip_rate == 1.0 and swap.top_class == 1


def test_a_model_that_answers_one_class_only_leaves_the_changes_untestable():
    rng = np.random.default_rng(0)
    images = grey_images(rng.uniform(0.3, 0.7, 60))
    data = probe(images, rng.integers(0, 2, 60), lambda pixels: (np.zeros(len(pixels), int), np.ones(len(pixels))))
    tests = {t.name: t for t in run_interventions(data)}
    assert tests["brighter"].status == tests["swap_border"].status == "untestable"
    assert tests["shift_1px"].status == "ok"


def follows_the_surroundings(pixels: np.ndarray):
    """Answers by the brightness outside the middle of the image."""
    around = pixels.astype(float).copy()
    around[:, 4:12, 4:12] = np.nan
    return (np.nanmean(around, axis=(1, 2, 3)) / 255 > 0.5).astype(int), np.ones(len(pixels))


def part_values(images: np.ndarray, objects: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    return {"object": properties.measure_away(images, objects), "surroundings": properties.measure_away(images, ~objects)}


def two_coloured(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A middle square and its surroundings, each of its own random colour; and where the square is."""
    images = np.empty((count, 16, 16, 3))
    images[:] = rng.uniform(0.15, 0.85, (count, 1, 1, 3))
    images[:, 4:12, 4:12] = rng.uniform(0.15, 0.85, (count, 1, 1, 3))
    images += rng.normal(0, 0.01, images.shape)
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8), middle_square(count)


def red_object(pixels: np.ndarray):
    """Answers 1 when the middle square is redder than it is blue, whatever the surroundings."""
    middle = pixels[:, 4:12, 4:12].astype(float).mean(axis=(1, 2))
    return (middle[:, 0] > middle[:, 2]).astype(int), np.ones(len(pixels))


def test_a_colour_cue_on_the_object_is_placed_there_by_a_dose_of_its_own():
    """The whole image's colour balance hardly tells the answers apart (the surroundings are random):
    changed on the object by as much as the objects differ between the answers, it does."""
    images, middle = two_coloured(160, np.random.default_rng(5))
    data = probe(images, np.random.default_rng(6).integers(0, 2, 160), red_object)
    tests = [t for t in run_interventions(data) if t.cue == "colour" and t.status == "ok"]
    tests.sort(key=lambda t: -t.flip_rate)
    assert locate(tests, data, middle, part_values(images, middle)) == "object"
    located = [t for t in tests if t.placement]
    assert max(t.placement["object"] for t in located) > 0.5
    assert max(t.placement["surroundings"] for t in located) < 0.1


def test_repainting_the_object_alone_converts_a_model_that_reads_its_colour_both_ways():
    """Painted the colour of an object answered the other way, the object flips the answers to that
    class, whichever way the colour moves; the surroundings repainted leave them alone."""
    images, middle = two_coloured(160, np.random.default_rng(5))
    data = probe(images, np.random.default_rng(6).integers(0, 2, 160), red_object)
    values = part_values(images, middle)
    on_object = {t.name: t for t in run_interventions(on_part(data, middle, values["object"]), {"colour"})}
    more, less = on_object["red_tint_of_others"], on_object["red_poor_tint_of_others"]
    assert more.flip_rate > 0.6 and less.flip_rate > 0.6 and more.top_class != less.top_class
    around = {t.name: t for t in run_interventions(on_part(data, ~middle, values["surroundings"]), {"colour"})}
    assert around["red_tint_of_others"].flip_rate < 0.05 and around["red_poor_tint_of_others"].flip_rate < 0.05
    whole = {t.name for t in run_interventions(data, {"colour"})}
    assert "red_tint_of_others" not in whole, "a repaint needs a part; on the whole image it is a cast"


def grey_scenes(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey images of random levels, random labels, and the middle square as each image's object."""
    rng = np.random.default_rng(seed)
    levels, labels = rng.uniform(0.3, 0.7, count), rng.integers(0, 2, count)
    return grey_images(levels), labels, middle_square(count)


def middle_square(count: int) -> np.ndarray:
    middle = np.zeros((count, 16, 16), bool)
    middle[:, 4:12, 4:12] = True
    return middle


def test_the_cue_is_placed_where_changing_it_alone_moves_the_model():
    images, labels, middle = grey_scenes(120, seed=0)
    for predict, place in ((follows_the_object, "object"), (follows_the_surroundings, "surroundings")):
        data = probe(images, labels, predict)
        brighter = {t.name: t for t in run_interventions(data)}["brighter"]
        assert locate([brighter], data, middle, part_values(images, middle)) == place
        assert brighter.place == place, brighter.placement
        other = "surroundings" if place == "object" else "object"
        assert brighter.placement[place] > 0.9 and brighter.placement[other] < 0.1


def test_place_needs_a_significant_difference_above_the_floor():
    assert place_of((50, 100), (50, 100), 0.01) == "both"
    assert place_of((3, 100), (1, 100), 0.01) == "", "neither part alone moves the model beyond the floor"
    assert place_of((10, 100), (60, 100), 0.01) == "surroundings"
    assert place_of((60, 100), (10, 100), 0.01) == "object"
    assert place_of((0, 10), (3, 10), 0.01) == "", "too few images to tell the parts apart, one below the floor"
    assert place_of((20, 100), (30, 100), 0.01) == "both", "not significantly more in either part"
    assert place_of((0, 0), (30, 100), 0.01) == ""


def test_place_pools_the_cues_strongest_changes():
    """The place comes from the flips of several changes together, and every located change carries it."""
    images, labels, middle = grey_scenes(60, seed=1)
    data = probe(images, labels, follows_the_surroundings)
    tests = [t for t in run_interventions(data) if t.name in ("brighter", "darker", "more_contrast")]
    assert locate(tests, data, middle, part_values(images, middle)) == "surroundings"
    assert all(t.place == "surroundings" for t in tests if t.placement)


def follows_the_background(pixels: np.ndarray):
    """Answers by how light the top-left corner, outside the object box, is."""
    return (pixels[:, :3, :3].mean(axis=(1, 2, 3)) / 255 > 0.5).astype(int), np.ones(len(pixels))


def test_a_change_that_moves_answers_both_ways_shows_examples_of_both():
    # Dark scenes (class 0) first, light ones (class 1) after: taken in order, the examples of a background
    # swap would all be dark scenes turned light.
    labels = np.repeat([0, 1], 30)
    images = grey_images(np.where(labels == 1, 0.8, 0.2))
    data = probe(images, labels, follows_the_background)
    boxed = ProbeData(**{**vars(data), "boxes": np.tile([4.0, 4.0, 12.0, 12.0], (len(images), 1))})
    swapped = {t.name: t for t in run_interventions(boxed)}["swap_background"]
    assert swapped.flip_rate > 0.9
    ways = [(before, after) for _, before, after, _, _ in swapped.examples]
    assert ways[:2] in ([(0, 1), (1, 0)], [(1, 0), (0, 1)]) and len(ways) == 4
    _, changed = swapped.pairs
    assert [int(follows_the_background(changed[k:k + 1])[0][0]) for k in range(4)] == [a for _, a in ways]


def test_packed_masks_give_back_the_masks_and_their_complements():
    masks = np.random.default_rng(0).random((10, 7, 9)) < 0.5
    packed = evidence.PackedMasks(evidence.PackedMasks.bits(masks), (7, 9))
    chosen = np.array([3, 1, 7])
    assert len(packed) == 10 and packed[chosen].dtype == bool
    np.testing.assert_array_equal(packed[chosen], masks[chosen])
    np.testing.assert_array_equal((~packed)[chosen], ~masks[chosen])
    np.testing.assert_array_equal((~~packed)[[0, 9]], masks[[0, 9]])
    assert packed.bits(masks).nbytes == 10 * 8   # 63 pixels: 8 bytes an image, not 63
