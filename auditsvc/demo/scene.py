"""Procedural forest scenes, with or without a camouflaged tank, under a sunny or a cloudy sky.

The scene is drawn in three independent parts, each from its own random stream split off the
caller's generator: the forest layout, the tank, and the weather (sky and lighting). Calling
`render_scene` twice from generators in the same state with only `tank` or only `weather`
changed therefore gives the same forest: the pair differs only in the tank's pixels, or only in
the sky and the lighting. Weather reaches the tank the way it reaches everything else on the
ground, through the lighting.

Shapes are drawn at twice the output size and box-filtered down, which antialiases them and
keeps every pixel of the tank inside its box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

WEATHERS = ("sunny", "cloudy")
SUPERSAMPLE = 2

Color = tuple[int, int, int]


def render_scene(rng: np.random.Generator, tank: bool, weather: str,
                 size: int = 64) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """A size x size RGB forest scene (uint8 HxWx3) and the tank's box (x0, y0, x1, y1), or None.

    The box is in output pixels, x1 and y1 exclusive, and covers the whole tank, including any
    part hidden behind a tree.
    """
    if weather not in WEATHERS:
        raise ValueError(f"weather must be one of {WEATHERS}, got {weather!r}")
    layout_rng, tank_rng, weather_rng = (np.random.default_rng(seed) for seed in rng.integers(0, 2**63, size=3))
    canvas = Canvas(size * SUPERSAMPLE)
    horizon = int(canvas.size * layout_rng.uniform(0.30, 0.40))
    # The tank is placed even when it is not drawn, so that a scene and its tank-free twin share
    # the tree that sometimes stands in front of it.
    placement = place_tank(tank_rng, canvas.size)

    draw_ground(canvas, layout_rng, horizon)
    things = forest_things(layout_rng, canvas.size, horizon, placement)
    if tank:
        things.append(Thing(placement.bottom, lambda c: draw_tank(c, tank_rng, placement)))
    for thing in sorted(things, key=lambda t: draw_order(t, placement)):
        thing.draw(canvas)

    sky = render_sky(weather_rng, weather, canvas.size, horizon)
    ground = light(canvas.albedo(), weather_rng, weather)
    mask = canvas.ground_mask()[..., None]
    image = sky * (1 - mask) + ground * mask
    image = downsample(image, SUPERSAMPLE)
    image += weather_rng.normal(0, 2.5, image.shape)  # sensor noise
    box = placement.box_in_output(SUPERSAMPLE, size) if tank else None
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), box


# --- canvas -----------------------------------------------------------------------------------

class Canvas:
    """Albedo (surface colour before lighting) plus a mask of everything that is not sky."""

    def __init__(self, size: int):
        self.size = size
        self._albedo = Image.new("RGB", (size, size))
        self._mask = Image.new("L", (size, size))
        self.color = ImageDraw.Draw(self._albedo)
        self.solid = ImageDraw.Draw(self._mask)

    def polygon(self, points, fill: Color) -> None:
        self.color.polygon(points, fill=fill)
        self.solid.polygon(points, fill=255)

    def ellipse(self, box, fill: Color) -> None:
        self.color.ellipse(box, fill=fill)
        self.solid.ellipse(box, fill=255)

    def rectangle(self, box, fill: Color) -> None:
        self.color.rectangle(box, fill=fill)
        self.solid.rectangle(box, fill=255)

    def line(self, points, fill: Color, width: int) -> None:
        self.color.line(points, fill=fill, width=width)
        self.solid.line(points, fill=255, width=width)

    def paste(self, image: Image.Image, mask: Image.Image) -> None:
        self._albedo.paste(image, (0, 0), mask)
        self._mask.paste(255, (0, 0), mask)

    def albedo(self) -> np.ndarray:
        return np.asarray(self._albedo, dtype=np.float32)

    def ground_mask(self) -> np.ndarray:
        return np.asarray(self._mask, dtype=np.float32) / 255


@dataclass
class Thing:
    """Something standing on the ground; `base` is the y of its foot, for drawing far to near."""
    base: float
    draw: Callable[[Canvas], None]
    span: tuple[float, float] | None = None  # horizontal extent of low clutter (bushes, rocks, logs)


def draw_order(thing: Thing, tank: "TankPlacement") -> float:
    """Far to near, except that low clutter never hides the tank: only trees stand in front of it."""
    x0, _, x1, _ = tank.box
    if thing.span is not None and thing.span[0] < x1 and thing.span[1] > x0:
        return min(thing.base, tank.bottom - 0.5)
    return thing.base


def jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    """Mostly lighter or darker, a little off in hue."""
    shifted = np.array(color) + rng.normal(0, amount) + rng.normal(0, amount / 3, 3)
    return tuple(int(c) for c in np.clip(shifted, 0, 255))


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about size / cells pixels."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC))


# --- forest -----------------------------------------------------------------------------------

GRASS = ((78, 112, 48), (96, 118, 52), (64, 96, 44), (110, 104, 60))
DIRT = (112, 92, 62)
FOLIAGE = ((46, 84, 36), (62, 102, 40), (84, 112, 44), (38, 70, 40), (72, 92, 38))
BARK = ((74, 58, 42), (92, 76, 58), (58, 50, 44), (104, 92, 76))


def draw_ground(canvas: Canvas, rng: np.random.Generator, horizon: int) -> None:
    """Grass and dirt with texture from the horizon down, and a distant tree line on the horizon."""
    size = canvas.size
    base = np.array(mix(GRASS[rng.integers(len(GRASS))], DIRT, rng.uniform(0, 0.5)), dtype=np.float32)
    base += rng.normal(0, 8, 3)
    patches = smooth_noise(rng, size, 6)[..., None] * np.array([14, 12, 8])
    grain = smooth_noise(rng, size, 32)[..., None] * 10
    ground = np.clip(base + patches + grain, 0, 255).astype(np.uint8)
    mask = Image.new("L", (size, size))
    ImageDraw.Draw(mask).rectangle((0, horizon, size, size), fill=255)
    canvas.paste(Image.fromarray(ground), mask)
    draw_tree_line(canvas, rng, horizon)


def draw_tree_line(canvas: Canvas, rng: np.random.Generator, horizon: int) -> None:
    size = canvas.size
    xs = np.linspace(0, size, int(rng.integers(10, 22)))
    heights = rng.uniform(0.03, 0.11, xs.size) * size
    points = [(0, horizon + 2)] + [(x, horizon - h) for x, h in zip(xs, heights)] + [(size, horizon + 2)]
    canvas.polygon(points, jitter(rng, mix(FOLIAGE[3], (70, 80, 70), 0.4), 6))


def forest_things(rng: np.random.Generator, size: int, horizon: int, placement: "TankPlacement") -> list[Thing]:
    things = [tree(rng, size, horizon, rng.uniform(horizon + 2, size * 1.05), rng.uniform(-0.05, 1.05) * size)
              for _ in range(rng.integers(3, 9))]
    things += [bush(rng, size, horizon) for _ in range(rng.integers(1, 6))]
    things += [rock(rng, size, horizon) for _ in range(rng.integers(0, 3))]
    if rng.random() < 0.35:
        things.append(log(rng, size, horizon))
    if rng.random() < 0.3:  # a tree in front of where the tank is (or would be)
        x0, _, x1, _ = placement.box
        base = placement.bottom + rng.uniform(1, 0.08 * size)
        things.append(tree(rng, size, horizon, base, rng.uniform(x0 + 0.15 * (x1 - x0), x1 - 0.15 * (x1 - x0))))
    return things


def nearness(size: int, horizon: int, base: float) -> float:
    """0 at the horizon, 1 at the bottom edge: scales things with distance."""
    return float(np.clip((base - horizon) / (size - horizon), 0, 1.2))


def tree(rng: np.random.Generator, size: int, horizon: int, base: float, x: float) -> Thing:
    scale = 0.35 + 0.75 * nearness(size, horizon, base)
    trunk_width = max(2.0, rng.uniform(0.025, 0.06) * size * scale)
    top = rng.uniform(-0.1, 0.25) * size
    bark = jitter(rng, BARK[rng.integers(len(BARK))], 8)
    leaves = jitter(rng, FOLIAGE[rng.integers(len(FOLIAGE))], 10)
    conifer = rng.random() < 0.4
    canopy = [(rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0.6, 1.1)) for _ in range(rng.integers(3, 7))]
    crown = rng.uniform(0.12, 0.24) * size * scale
    crown_depth = rng.uniform(0.25, 0.55)  # how far down the trunk the crown reaches

    def draw(canvas: Canvas) -> None:
        canvas.rectangle((x - trunk_width / 2, top, x + trunk_width / 2, base), bark)
        # a darker stripe down one side of the trunk reads as roundness
        canvas.color.rectangle((x + trunk_width / 6, top, x + trunk_width / 2, base), fill=mix(bark, (0, 0, 0), 0.25))
        crown_bottom = top + (base - top) * crown_depth
        if conifer:
            for step in range(3):
                y = top + (crown_bottom - top) * (step + 1) / 3
                half = crown * (0.5 + 0.25 * step)
                canvas.polygon([(x, y - (crown_bottom - top) / 2), (x - half, y), (x + half, y)],
                               mix(leaves, (0, 0, 0), 0.1 * step))
        else:
            for dx, dy, r in canopy:
                cx, cy, radius = x + dx * crown * 0.8, top + dy * (crown_bottom - top), crown * r * 0.7
                shade = mix(leaves, (255, 255, 200), 0.15) if dy < 0.4 else leaves
                canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), shade)

    return Thing(base, draw)


def bush(rng: np.random.Generator, size: int, horizon: int) -> Thing:
    base = rng.uniform(horizon + 4, size * 1.05)
    x = rng.uniform(0, size)
    scale = 0.3 + 0.8 * nearness(size, horizon, base)
    leaves = jitter(rng, FOLIAGE[rng.integers(len(FOLIAGE))], 12)
    blobs = [(rng.uniform(-1, 1), rng.uniform(-0.5, 0), rng.uniform(0.5, 1)) for _ in range(rng.integers(2, 6))]
    radius = rng.uniform(0.05, 0.12) * size * scale

    def draw(canvas: Canvas) -> None:
        for dx, dy, r in blobs:
            cx, cy = x + dx * radius, base + dy * radius * 1.5 - radius * r * 0.5
            canvas.ellipse((cx - radius * r, cy - radius * r, cx + radius * r, cy + radius * r),
                           mix(leaves, (0, 0, 0), 0.2 * (1 + dy)))

    return Thing(base, draw, (x - 2 * radius, x + 2 * radius))


def rock(rng: np.random.Generator, size: int, horizon: int) -> Thing:
    base = rng.uniform(horizon + 4, size)
    x = rng.uniform(0, size)
    scale = 0.3 + 0.8 * nearness(size, horizon, base)
    width, height = rng.uniform(0.06, 0.14) * size * scale, rng.uniform(0.03, 0.07) * size * scale
    stone = jitter(rng, (112, 108, 98), 12)

    def draw(canvas: Canvas) -> None:
        canvas.ellipse((x - width, base - 2 * height, x + width, base), stone)
        canvas.color.ellipse((x - width * 0.6, base - 1.9 * height, x + width * 0.2, base - height),
                             fill=mix(stone, (255, 255, 255), 0.15))

    return Thing(base, draw, (x - width, x + width))


def log(rng: np.random.Generator, size: int, horizon: int) -> Thing:
    """A fallen trunk: long, straight and horizontal, like a tank's hull, so edges alone don't give it away."""
    base = rng.uniform(horizon + 8, size)
    x = rng.uniform(0, size)
    scale = 0.4 + 0.7 * nearness(size, horizon, base)
    length, thickness = rng.uniform(0.2, 0.4) * size * scale, rng.uniform(0.03, 0.06) * size * scale
    tilt = rng.uniform(-0.12, 0.12) * length
    bark = jitter(rng, BARK[rng.integers(len(BARK))], 10)

    def draw(canvas: Canvas) -> None:
        canvas.line([(x - length / 2, base - tilt), (x + length / 2, base + tilt)], bark, int(max(2, thickness)))

    return Thing(base, draw, (x - length / 2, x + length / 2))


# --- tank -------------------------------------------------------------------------------------

CAMO = ((96, 100, 58), (82, 72, 46), (58, 70, 40), (122, 114, 78), (70, 62, 44))
TRACK = (48, 46, 40)


@dataclass
class TankPlacement:
    left: float
    bottom: float
    length: float       # hull length; the barrel sticks out beyond it
    facing_right: bool
    barrel: float       # barrel length as a fraction of the hull's
    elevation: float    # barrel rise over its length

    @property
    def height(self) -> float:
        return 0.56 * self.length

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Extent on the canvas, barrel included."""
        reach = self.length * self.barrel
        x0 = self.left - (0 if self.facing_right else reach * 0.55)
        x1 = self.left + self.length + (reach * 0.55 if self.facing_right else 0)
        top = self.bottom - self.height - max(0.0, self.elevation * reach) - 1
        return x0, top, x1, self.bottom

    def box_in_output(self, factor: int, size: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = self.box
        return (max(0, int(np.floor(x0 / factor))), max(0, int(np.floor(y0 / factor))),
                min(size, int(np.ceil(x1 / factor))), min(size, int(np.ceil(y1 / factor))))


def place_tank(rng: np.random.Generator, size: int) -> TankPlacement:
    length = rng.uniform(0.25, 0.40) * size / 1.25  # with the barrel the tank spans 25-40% of the width
    placement = TankPlacement(left=0, bottom=rng.uniform(0.76, 0.97) * size, length=length,
                              facing_right=bool(rng.random() < 0.5), barrel=rng.uniform(0.35, 0.55),
                              elevation=rng.uniform(-0.05, 0.2))
    x0, _, x1, _ = placement.box
    span = x1 - x0
    placement.left = rng.uniform(0.01 * size, 0.99 * size - span) + (placement.left - x0)
    return placement


def draw_tank(canvas: Canvas, rng: np.random.Generator, tank: TankPlacement) -> None:
    """Hull and turret in mottled camouflage, dark tracks with road wheels, and a barrel."""
    hull, turret, barrel = tank_outline(tank)
    shape = Image.new("L", (canvas.size, canvas.size))
    outline = ImageDraw.Draw(shape)
    for polygon in (hull, turret, barrel):
        outline.polygon(polygon, fill=255)
    canvas.paste(camouflage(rng, canvas.size, tank), shape)
    draw_tracks(canvas, rng, tank)


def tank_outline(tank: TankPlacement):
    """Hull, turret and barrel polygons, drawn facing right and mirrored when facing left."""
    L, left, bottom = tank.length, tank.left, tank.bottom

    def place(points):
        return [(left + (x if tank.facing_right else L - x), bottom - y) for x, y in points]

    hull = place([(0.02 * L, 0.18 * L), (0.0, 0.32 * L), (0.10 * L, 0.39 * L), (0.78 * L, 0.39 * L),
                  (1.0 * L, 0.30 * L), (0.98 * L, 0.18 * L)])
    turret = place([(0.20 * L, 0.38 * L), (0.27 * L, 0.55 * L), (0.62 * L, 0.55 * L), (0.72 * L, 0.38 * L)])
    reach, thick = tank.barrel * L, max(0.035 * L, 1.6)
    start = (0.66 * L, 0.47 * L)
    end = (start[0] + reach, start[1] + tank.elevation * reach)
    barrel = place([(start[0], start[1] - thick / 2), (end[0], end[1] - thick / 2),
                    (end[0], end[1] + thick / 2), (start[0], start[1] + thick / 2)])
    return hull, turret, barrel


def camouflage(rng: np.random.Generator, size: int, tank: TankPlacement) -> Image.Image:
    """A mottled pattern of a few camouflage colours over the tank's area."""
    colors = [jitter(rng, CAMO[i], 8) for i in rng.permutation(len(CAMO))[:3]]
    pattern = Image.new("RGB", (size, size), colors[0])
    draw = ImageDraw.Draw(pattern)
    x0, y0, x1, y1 = tank.box
    for _ in range(rng.integers(6, 12)):
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        rx, ry = rng.uniform(0.08, 0.2) * tank.length, rng.uniform(0.05, 0.12) * tank.length
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=colors[1 + rng.integers(2)])
    return pattern


def draw_tracks(canvas: Canvas, rng: np.random.Generator, tank: TankPlacement) -> None:
    L, left, bottom = tank.length, tank.left, tank.bottom
    track = jitter(rng, TRACK, 5)
    canvas.polygon([(left + 0.02 * L, bottom - 0.2 * L), (left + 0.98 * L, bottom - 0.2 * L),
                    (left + 0.90 * L, bottom), (left + 0.10 * L, bottom)], track)
    wheel = mix(track, (150, 145, 120), 0.45)
    count = int(rng.integers(4, 6))
    radius = 0.3 * L / count
    for i in range(count):
        cx = left + L * (0.15 + 0.7 * i / (count - 1))
        cy = bottom - 0.1 * L
        canvas.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), wheel)


# --- weather ----------------------------------------------------------------------------------

def render_sky(rng: np.random.Generator, weather: str, size: int, horizon: int) -> np.ndarray:
    return sunny_sky(rng, size, horizon) if weather == "sunny" else cloudy_sky(rng, size, horizon)


def vertical_gradient(size: int, horizon: int, top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    t = np.clip(np.arange(size, dtype=np.float32) / max(horizon, 1), 0, 1)[:, None, None]
    return np.broadcast_to(top + (bottom - top) * t, (size, size, 3)).copy()


def sunny_sky(rng: np.random.Generator, size: int, horizon: int) -> np.ndarray:
    top = np.array([rng.uniform(60, 110), rng.uniform(140, 180), rng.uniform(220, 255)])
    bottom = np.array([rng.uniform(165, 205), rng.uniform(205, 235), rng.uniform(240, 255)])
    sky = Image.fromarray(vertical_gradient(size, horizon, top, bottom).astype(np.uint8))
    draw = ImageDraw.Draw(sky)
    for _ in range(rng.integers(0, 3) if rng.random() < 0.5 else 0):  # a few small fair-weather clouds
        cx, cy, r = rng.uniform(0, size), rng.uniform(0.05, 0.7) * horizon, rng.uniform(0.03, 0.06) * size
        for dx in (-1, 0, 1):
            draw.ellipse((cx + dx * r - r, cy - r * 0.6, cx + dx * r + r, cy + r * 0.6), fill=(240, 244, 250))
    if rng.random() < 0.6:
        cx, cy, r = rng.uniform(0.1, 0.9) * size, rng.uniform(0.15, 0.6) * horizon, rng.uniform(0.04, 0.07) * size
        draw.ellipse((cx - 2 * r, cy - 2 * r, cx + 2 * r, cy + 2 * r), fill=(250, 250, 225))
        sky = sky.filter(ImageFilter.GaussianBlur(r * 0.6))
        ImageDraw.Draw(sky).ellipse((cx - r, cy - r, cx + r, cy + r), fill=(255, 255, 240))
    return np.asarray(sky, dtype=np.float32)


def cloudy_sky(rng: np.random.Generator, size: int, horizon: int) -> np.ndarray:
    grey = rng.uniform(120, 170)
    tint = np.array([0, rng.uniform(0, 4), rng.uniform(2, 10)])
    top, bottom = grey - rng.uniform(5, 25) + tint, grey + rng.uniform(0, 15) + tint
    sky = Image.fromarray(np.clip(vertical_gradient(size, horizon, top, bottom), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(sky)
    for _ in range(rng.integers(6, 14)):
        cx, cy = rng.uniform(-0.1, 1.1) * size, rng.uniform(-0.1, 1.0) * horizon
        rx, ry = rng.uniform(0.08, 0.25) * size, rng.uniform(0.04, 0.1) * size
        shade = int(np.clip(grey + rng.uniform(-35, 30), 0, 255))
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(shade, shade + 1, shade + 4))
    return np.asarray(sky.filter(ImageFilter.GaussianBlur(size * 0.03)), dtype=np.float32)


def light(albedo: np.ndarray, rng: np.random.Generator, weather: str) -> np.ndarray:
    """Global illumination: sunny is bright, warm and saturated; overcast is dim, grey and flat."""
    if weather == "sunny":
        gain, saturation, contrast = rng.uniform(1.1, 1.3), rng.uniform(1.0, 1.25), rng.uniform(1.0, 1.15)
        tint = np.array([1.04, 1.0, 0.9])
    else:
        gain, saturation, contrast = rng.uniform(0.7, 0.85), rng.uniform(0.45, 0.75), rng.uniform(0.8, 0.9)
        tint = np.array([0.97, 1.0, 1.05])
    grey = albedo @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    color = grey[..., None] + (albedo - grey[..., None]) * saturation
    pivot = 100.0  # fixed, not the image mean, so the lighting of a pixel depends only on that pixel
    color = pivot + (color - pivot) * contrast
    return np.clip(color * gain * tint, 0, 255)


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    h, w, c = image.shape
    return image.reshape(h // factor, factor, w // factor, factor, c).mean(axis=(1, 3))
