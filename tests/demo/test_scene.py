import numpy as np
import pytest

from auditsvc.demo.scene import WEATHERS, render_scene

LUMA = np.array([0.299, 0.587, 0.114])
CELLS = [(tank, weather) for tank in (False, True) for weather in WEATHERS]


def _render(seed, tank, weather, size=64):
    return render_scene(np.random.default_rng(seed), tank=tank, weather=weather, size=size)


def _brightness(pixels: np.ndarray) -> float:
    return float((pixels.astype(float) @ LUMA).mean())


@pytest.mark.parametrize("tank,weather", CELLS)
def test_images_are_uint8_rgb_of_the_requested_size(tank, weather):
    for size in (64, 40):
        image, box = _render(1, tank, weather, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert (box is not None) == tank


@pytest.mark.parametrize("tank,weather", CELLS)
def test_same_generator_state_gives_the_same_scene(tank, weather):
    first, first_box = _render(7, tank, weather)
    second, second_box = _render(7, tank, weather)
    assert np.array_equal(first, second) and first_box == second_box
    third, _ = _render(8, tank, weather)
    assert not np.array_equal(first, third)


def test_successive_scenes_from_one_generator_differ():
    rng = np.random.default_rng(0)
    first, _ = render_scene(rng, tank=True, weather="sunny")
    second, _ = render_scene(rng, tank=True, weather="sunny")
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("weather", WEATHERS)
def test_box_is_inside_the_image_and_covers_every_tank_pixel(weather):
    # The same generator state without the tank gives the same forest, so the pixels that
    # differ are the tank's own.
    for seed in range(12):
        with_tank, box = _render(seed, True, weather)
        without, _ = _render(seed, False, weather)
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        assert 64 * 0.2 <= x1 - x0 <= 64 * 0.45
        assert y0 >= 64 * 0.45, "the tank stands in the lower half"
        changed = np.abs(with_tank.astype(int) - without).max(axis=2) > 0
        inside = np.zeros_like(changed)
        inside[y0:y1, x0:x1] = True
        assert not changed[~inside].any()
        assert changed[inside].mean() > 0.15, "the tank is drawn, not hidden"


def _blue_sky_pixels(pixels: np.ndarray) -> int:
    return int((pixels[..., 2].astype(int) - pixels[..., 0] > 30).sum())


def test_weather_changes_the_sky_and_the_lighting_of_the_same_scene():
    sky, ground = slice(0, 16), slice(40, 64)
    for seed in range(8):
        sunny, _ = _render(seed, seed % 2 == 0, "sunny")
        cloudy, _ = _render(seed, seed % 2 == 0, "cloudy")
        assert _brightness(sunny[sky]) > _brightness(cloudy[sky]) + 5
        assert _brightness(sunny[ground]) > _brightness(cloudy[ground]) + 5
        # trees may hide much of the sky, but what shows is blue when sunny and never when cloudy
        assert _blue_sky_pixels(sunny[:24]) > 20 and _blue_sky_pixels(cloudy[:24]) == 0


def test_weather_leaves_the_tank_where_it_was():
    _, sunny_box = _render(3, True, "sunny")
    _, cloudy_box = _render(3, True, "cloudy")
    assert sunny_box == cloudy_box


def test_unknown_weather_is_refused():
    with pytest.raises(ValueError, match="weather"):
        _render(0, True, "foggy")
