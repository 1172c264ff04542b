"""Model summary: layers, types, output shapes, parameter counts, file identity."""

from __future__ import annotations

import torch

from ..context import AuditContext
from ..registry import Section, register
from ..results import Finding, SectionResult, Table, Text, property_check

MAX_ROWS = 80


@register
class ModelSummary(Section):
    name = "summary"
    title = "Model summary"
    order = 10
    appendix = True
    intro = ("The layers of the exported graph in execution order, named by their module path, with "
             "their output shape for one image and the weights they own.")

    def run(self, context: AuditContext) -> SectionResult:
        graph, meta = context.graph, context.model.meta
        leaves = graph.leaf_layers()
        weights = graph.weights()
        total = sum(t.numel() for name, t in weights.items() if not _is_statistic(name))
        trainable = sum(t.numel() for t in context.model.program.parameters())
        rows = [[layer.name, layer.type, "x".join(map(str, layer.shape)), f"{layer.parameters:,}"]
                for layer in leaves[:MAX_ROWS]]
        origin = context.model.origin
        blocks = [
            Table(["property", "value"], [
                ["file", f"{context.model.path.name} ({context.model.format})"],
                *([["conversion", origin.describe()]] if origin else []),
                ["sha256", context.model.sha256],
                ["input", f"{'x'.join(map(str, meta.input.size))}, mean {list(meta.input.mean)}, std {list(meta.input.std)}"],
                ["classes", f"{len(meta.classes)}: {', '.join(meta.classes[:12])}{' ...' if len(meta.classes) > 12 else ''}"],
                ["layers", f"{len(leaves)} leaf layers, {sum(l.is_conv for l in leaves)} convolutions, {graph.relu_count} ReLUs"],
                ["weights", f"{total:,} ({trainable:,} stored as trainable parameters)"],
            ], title="Identity"),
            Table(["layer", "type", "output", "weights"], rows, title="Layers",
                  caption="Output shapes exclude the batch dimension. Functional operations inside a "
                          "module are listed as <module>:<operation>."),
        ]
        if len(leaves) > MAX_ROWS:
            blocks.append(Text(f"{len(leaves) - MAX_ROWS} more layers are not listed.", "note"))
        findings = _weight_health(weights) + _mode_health(context)
        data = {"layers": len(leaves), "parameters": total, "trainable": trainable,
                "convolutions": sum(l.is_conv for l in leaves), "relus": graph.relu_count}
        checks = [property_check("Weights are finite", "fails on any NaN or infinite weight", findings,
                                 "health.nonfinite_weights"),
                  property_check("Exported in inference mode", "warns on BatchNorm or dropout in training mode",
                                 findings, "health.training_mode")]
        return self.result(blocks=blocks, data=data, findings=findings, checks=checks)


def _is_statistic(name: str) -> bool:
    return name.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _weight_health(weights: dict[str, torch.Tensor]) -> list[Finding]:
    broken = [name for name, t in weights.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if not broken:
        return []
    return [Finding("health.nonfinite_weights", "health", "fail", "Weights contain NaN or infinity",
                    f"{len(broken)} weight tensors hold NaN or infinite values, starting with {broken[0]}.",
                    {"tensors": broken[:20]})]


def _mode_health(context: AuditContext) -> list[Finding]:
    """BatchNorm or dropout still in training mode gives batch-dependent, random outputs."""
    training_ops = []
    for node in context.graph.module.graph.nodes:
        target = str(node.target)
        if "batch_norm" in target and "no_training" not in target and "legit_functional" in target:
            training_ops.append(node.name)
        elif "dropout" in target and node.args and len(node.args) > 2 and node.args[2] is True:
            training_ops.append(node.name)
    if not training_ops:
        return []
    return [Finding("health.training_mode", "health", "warn", "Model was exported in training mode",
                    f"{len(training_ops)} operations (BatchNorm or dropout) run in training mode, so outputs depend "
                    "on the batch or are random; export after model.eval().", {"operations": training_ops[:20]})]
