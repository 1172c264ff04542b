"""Where the model looks: attribution in the object box, the border and the corners; SpRAy clusters."""

from __future__ import annotations

import numpy as np

from .. import figures
from ..context import AuditContext
from ..probes import attribution_regions as looking
from ..registry import Section, register
from ..results import Figure, SectionResult, Table, Text
from ..sampling import sample_record, sample_words

MAX_CLASSES = 4
MEMBERS_SHOWN = 5


@register
class WhereTheModelLooks(Section):
    name = "looking"
    title = "Where the model looks"
    order = 26
    intro = ("Attribution (gradient and Grad-CAM for the predicted class) over every probe image: how much of it "
             "falls on the object's box, on the image border and in each corner, compared with the share of the "
             "image those regions cover; and SpRAy, which clusters one class's attribution maps to show whether "
             "the model uses one strategy or several (a cluster looking at the border or a corner is a "
             "shortcut candidate). Explanations are evidence for a reviewer; they never decide a verdict.")

    def run(self, context: AuditContext) -> SectionResult:
        seen = context.looking
        blocks = [_region_table(seen)]
        data = {"region_ratio": seen.region_ratio, "grad_cam_layer": seen.grad_cam_layer}
        if seen.box_area is not None and not np.isnan(seen.box_area).all():
            blocks.append(_box_table(seen))
            data["object_box"] = {m: float(np.nanmean(seen.box_share[m])) for m in seen.methods}
        clusters = looking.spray(seen.maps["grad_cam"], context.outputs.predictions, context.options.seed,
                                 context.labels)
        shown = sorted(clusters, key=lambda c: -c.predicted)[:MAX_CLASSES]
        blocks += [_spray_figure(context, c, seen) for c in shown]
        if not clusters:
            blocks.append(Text(f"SpRAy needs at least {looking.MIN_CLASS_IMAGES} images predicted as one class; "
                               "no class has that many.", "note"))
        data["spray"] = [{"class": context.classes[c.label], "images": len(c.members), "clusters": c.count,
                          "eigengap": round(c.gap, 4)}
                         | ({"sample": sample_record(looking.SPRAY_MAX_IMAGES, len(c.members), c.predicted)}
                            if len(c.members) < c.predicted else {}) for c in clusters]
        data["sample_cap"] = {"spray": looking.SPRAY_MAX_IMAGES}
        return self.result(blocks=blocks, data=data)


def _region_table(seen: looking.Looking) -> Table:
    rows = [[region.replace("_", " "), *(f"{seen.region_ratio[m][region]:.2f}" for m in seen.methods)]
            for region in looking.REGIONS]
    caption = ("Share of the attribution in the region divided by the share of the image it covers: 1 means "
               "no more than a random pixel, 3 means three times as much. A high border or corner value "
               "means the model attends to the frame or a corner mark.")
    return Table(["region", *seen.methods], rows, caption, "Attribution by region")


def _box_table(seen: looking.Looking) -> Table:
    area = float(np.nanmean(seen.box_area))
    rows = [[m, f"{np.nanmean(seen.box_share[m]):.0%}", f"{area:.0%}",
             f"{np.nanmean(seen.box_share[m]) / area:.2f}"] for m in seen.methods]
    caption = ("Mean share of attribution inside the object box over images with a box. A model that looks at "
               "the object puts far more than the box's area there; near or below 1 it looks elsewhere.")
    return Table(["method", "attribution in the box", "box area", "ratio"], rows, caption, "Attribution on the object")


def _spray_figure(context: AuditContext, result: looking.SprayResult, seen: looking.Looking) -> Figure:
    clusters = sorted(set(result.clusters), key=lambda c: -(result.clusters == c).sum())
    rows, labels = [], []
    for cluster in clusters:
        members = result.members[result.clusters == cluster]
        mean_map = seen.maps["grad_cam"][members].mean(axis=0)
        pixels = context.probe.pixels(list(members[:MEMBERS_SHOWN]), context.spec)
        rows.append([figures.heat_panel(mean_map, cmap="inferno", percentile=100),
                     *(figures.as_rgb(p) for p in pixels)])
        labels.append(f"cluster {cluster + 1}\n{len(members)} images")
    fig = figures.image_grid(rows, row_labels=labels, col_labels=["mean map"] + [""] * MEMBERS_SHOWN,
                             cell_inches=0.95, label_width=1.1,
                             scale=figures.ColourScale("inferno", "mean Grad-CAM, scaled"))
    name = context.classes[result.label]
    on = (sample_words(len(result.members), result.predicted, f"images predicted '{name}'")
          or f"on the {len(result.members)} images predicted '{name}'")
    caption = (f"SpRAy {on}: Grad-CAM maps clustered spectrally; "
               f"the eigengap suggests {result.count} cluster(s) (gap {result.gap:.3f}; eigenvalues "
               f"{', '.join(f'{v:.2f}' for v in result.eigenvalues[:5])}). Each row: the cluster's mean map (scaled "
               "to its highest value, 1 on the colour bar) and some of its images. Distinct clusters mean distinct "
               "strategies; check where each one looks. " + figures.panel_legend(rows))
    return Figure(figures.to_png(fig), caption.strip(), f"Attribution strategies for '{name}'", width="80%")
