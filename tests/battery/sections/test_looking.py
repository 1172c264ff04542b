"""The section on where the model looks: attribution shares by region, on a model whose every input
it reads lies in the top-left corner, so the shares are known by hand."""

import pytest

from auditsvc.battery.results import Figure, Table
from tests.battery.sections.support import CornerNet, run, section
from tests.conftest import write_package, write_probe

CLASSES = ["a", "b"]
SIDE = 32
CORNER = round(0.15 * SIDE)          # corners are 15% of the side: 5x5 pixels
BAND = round(0.06 * SIDE)            # the border band: 2 pixels
CORNERS = ("corner_top_left", "corner_top_right", "corner_bottom_left", "corner_bottom_right")


@pytest.fixture(scope="module")
def looking(tmp_path_factory):
    root = tmp_path_factory.mktemp("looking")
    package = write_package(root / "model", CornerNet(), CLASSES)
    probe = write_probe(root / "probe", CLASSES, per_class=4, size=(SIDE, SIDE))   # boxes x 4-20, y 6-30
    return section(run(package, probe, ["looking"], batch_size=3), "looking")


def test_all_attribution_falls_in_the_top_left_corner(looking):
    ratios = looking.data["region_ratio"]
    assert set(ratios) == {"gradient", "grad_cam"}
    corner_area = CORNER * CORNER / SIDE ** 2
    for method, by_region in ratios.items():
        # Each ratio is the region's share of the attribution divided by its share of the image.
        shares = {region: ratio * corner_area for region, ratio in by_region.items() if region in CORNERS}
        assert shares["corner_top_left"] == pytest.approx(1.0, abs=1e-6), method
        assert shares["corner_top_right"] == shares["corner_bottom_left"] == shares["corner_bottom_right"] == 0.0
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6)   # the corners do not overlap
        border_area = (SIDE ** 2 - (SIDE - 2 * BAND) ** 2) / SIDE ** 2
        border_share = by_region["border"] * border_area
        assert 0.0 < border_share < 1.0, method   # rows and columns 0-1 of the 4x4 pixels it reads


def test_nothing_falls_on_the_object_box(looking):
    assert looking.data["object_box"] == {"gradient": 0.0, "grad_cam": 0.0}
    assert looking.data["grad_cam_layer"].startswith("mul")   # the masked map: the last with a spatial extent
    table = next(b for b in looking.blocks if isinstance(b, Table) and b.title == "Attribution by region")
    assert [row[0] for row in table.rows] == ["border", "corner top left", "corner top right",
                                              "corner bottom left", "corner bottom right"]


def test_too_few_images_per_class_for_spray(looking):
    assert looking.data["spray"] == []     # SpRAy needs 12 images predicted as one class; there are 8 in all


def test_spray_above_its_cap_names_the_sample(tmp_path, monkeypatch):
    monkeypatch.setattr("auditsvc.battery.probes.attribution_regions.SPRAY_MAX_IMAGES", 12)
    package = write_package(tmp_path / "model", CornerNet(), CLASSES)
    probe = write_probe(tmp_path / "probe", CLASSES, per_class=16, size=(SIDE, SIDE))
    result = section(run(package, probe, ["looking"], batch_size=16), "looking")
    assert result.data["sample_cap"] == {"spray": 12}
    sampled = [entry for entry in result.data["spray"] if "sample" in entry]
    assert sampled   # 32 images, two classes: one is predicted at least 16 times
    for entry in sampled:
        assert entry["images"] == entry["sample"]["images"] == 12 and entry["sample"]["of"] > 12
        assert entry["clusters"] >= 1 and entry["eigengap"] >= 0
        [figure] = [b for b in result.blocks if isinstance(b, Figure) and f"'{entry['class']}'" in b.title]
        assert f"on a stratified sample of 12 of {entry['sample']['of']} images predicted '{entry['class']}'" \
            in figure.caption
