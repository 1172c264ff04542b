"""The fast copy of a model graph for whole-model passes (predictions, gradients, occlusion).

Two rewrites, both exact in evaluation mode and measured in bench/battery.py:
- every BatchNorm that directly follows a convolution is folded into the convolution's
  weights and bias (one op instead of two, and no extra tensor per layer);
- weights are stored channels-last and the input is made channels-last, the memory layout
  the CPU convolution kernels are fastest with. Views become reshapes: a view that flattens a
  channels-last map into a vector (a VGG-style head) needs a copy, which only reshape makes.
Nodes keep their names; a folded BatchNorm's output is the folded convolution's, so layer
taps still find it (`aliases`), while the convolution's own pre-BatchNorm output is gone.
"""

from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

CONV = {torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default}
BATCH_NORM = torch.ops.aten._native_batch_norm_legit_no_training.default
# A view of a channels-last map that merges its channels with its rows or columns (the flatten before
# a VGG- or AlexNet-style linear head) is impossible without a copy; reshape copies only then.
VIEWS = {torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default}


class ChannelsLast(nn.Module):
    """Calls a graph module with its input in channels-last memory layout."""

    def __init__(self, module: fx.GraphModule):
        super().__init__()
        self.module = module

    def forward(self, batch: torch.Tensor):
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.module(batch)


def get_attr(module: nn.Module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def fold_batch_norm(module: fx.GraphModule) -> tuple[fx.GraphModule, dict[str, str | None]]:
    """A copy with conv -> BatchNorm pairs folded; returns it and {full-graph node: fast node or None}."""
    graph = copy.deepcopy(module.graph)
    root = {n.target: get_attr(module, n.target) for n in graph.nodes if n.op in ("get_attr", "call_module")}
    aliases: dict[str, str | None] = {n.name: n.name for n in graph.nodes}
    for index, norm in enumerate([n for n in graph.nodes if n.target is BATCH_NORM]):
        conv = norm.args[0]
        items = list(norm.users)
        if (not isinstance(conv, fx.Node) or conv.target not in CONV or len(conv.users) != 1
                or not all(u.target is operator.getitem for u in items)
                or any(u.args[1] != 0 for u in items) or _transposed(conv)):
            continue
        weight, bias = _folded(root, conv, norm)
        root[f"auditsvc_folded_{index}_weight"], root[f"auditsvc_folded_{index}_bias"] = weight, bias
        with graph.inserting_before(conv):
            weight_node = graph.get_attr(f"auditsvc_folded_{index}_weight")
            bias_node = graph.get_attr(f"auditsvc_folded_{index}_bias")
        args = list(conv.args) + [None] * (3 - len(conv.args))
        args[1], args[2] = weight_node, bias_node
        conv.args = tuple(args)
        aliases[conv.name] = None  # its output now includes the BatchNorm
        for item in items:
            aliases[item.name] = conv.name
            item.replace_all_uses_with(conv)
            graph.erase_node(item)
        aliases[norm.name] = None
        graph.erase_node(norm)
    for node in graph.nodes:
        if node.target in VIEWS:
            node.target = torch.ops.aten.reshape.default
    graph.eliminate_dead_code()
    graph.lint()
    for name, tensor in root.items():
        if isinstance(tensor, torch.Tensor) and tensor.dim() == 4:
            root[name] = tensor.detach().contiguous(memory_format=torch.channels_last)
    return fx.GraphModule(root, graph), aliases


def _transposed(conv: fx.Node) -> bool:
    return conv.target is torch.ops.aten.convolution.default and len(conv.args) > 6 and bool(conv.args[6])


def _folded(root: dict, conv: fx.Node, norm: fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
    weight = root[conv.args[1].target]
    bias = root[conv.args[2].target] if len(conv.args) > 2 and conv.args[2] is not None else None
    gamma, beta, mean, var = (_value(root, a) for a in norm.args[1:5])
    eps = norm.args[6]
    scale = torch.rsqrt(var + eps)
    if gamma is not None:
        scale = scale * gamma
    folded_bias = ((bias if bias is not None else 0) - mean) * scale
    if beta is not None:
        folded_bias = folded_bias + beta
    return (weight * scale.view(-1, 1, 1, 1)).detach(), folded_bias.detach()


def _value(root: dict, arg):
    return None if arg is None else root[arg.target]


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients where the input was positive."""

    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        # The plain ReLU backward (a fused kernel), then drop the negative gradients in place.
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_(min=0)


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward is a ReLU of the gradient, ignoring the forward mask (Zeiler & Fergus)."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


def guided_relu(x: torch.Tensor) -> torch.Tensor:
    return _GuidedReLU.apply(x)


def deconv_relu(x: torch.Tensor) -> torch.Tensor:
    return _DeconvReLU.apply(x)


RELU_REPLACEMENTS = {"guided": guided_relu, "deconv": deconv_relu}
