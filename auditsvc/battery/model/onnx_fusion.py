"""Groups of converted nodes that torch.onnx writes for one torch module, made that module again.

torch.onnx spells some modules as several nodes: nn.SiLU as Sigmoid and Mul, nn.Hardswish (before
opset 14) as HardSigmoid and Mul, nn.GELU (before opset 20) as Div, Erf, Add, Mul, Mul, nn.LayerNorm
(before opset 17) as ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add, and a Linear layer
on a map (ConvNeXt's channels-last blocks) as MatMul and Add. Converted node by node, each step
would be a module and a layer of its own (`stage1.0.act.Div`, `stage1.0.act.Erf`, ...), none of them
the GELU. `fuse` finds these groups in the converted graph and makes each one the torch module, in
place of its first step; `collapse` then gives a container left with that one module (`stage1.0.act`)
to it. The layer list reads like the original model's and holds its outputs. A group is fused only
when nothing outside it reads its inner values; the onnxruntime check compares the result like any
other conversion."""

from __future__ import annotations

import math
import re

import torch
from torch import fx, nn

from .onnx_modules import Add, Binary, Div, Erf, Mul, Pow, ReduceMean, Sqrt, Sub


def fuse(module: fx.GraphModule, examples: dict[fx.Node, object]) -> None:
    """Fuse every group in place; `examples` holds each node's value on the example batch."""
    erased: set[fx.Node] = set()
    for node in list(module.graph.nodes):
        if node in erased or node.op != "call_module":
            continue
        for match in (_gated, _gelu, _layer_norm, _linear_bias):
            found = match(module, node, examples)
            if found is not None:
                _replace(module, *found, erased)
                break


def _replace(module: fx.GraphModule, nodes: list[fx.Node], replacement: nn.Module, op_type: str,
             erased: set[fx.Node]) -> None:
    """The first node (whose only input is the group's) now calls `replacement` and stands for the last. A
    path named after the first step's op (`stem.1.ReduceMean`) is named after the whole group's op; a module
    other nodes call too (a module called again) stays theirs, the group's module goes beside it."""
    first, last = nodes[0], nodes[-1]
    parent, _, name = first.target.rpartition(".")
    owner = module.get_submodule(parent)
    shared = any(n is not first and n.op == "call_module" and n.target == first.target for n in module.graph.nodes)
    step = type(module.get_submodule(first.target)).__name__
    named_after_step = re.fullmatch(re.escape(step) + r"(_\d+)?", name, flags=re.IGNORECASE)
    if shared or named_after_step:
        if not shared:
            delattr(owner, name)
        base = op_type if named_after_step else name
        name, number = base, 1
        while hasattr(owner, name):
            number += 1
            name = f"{base}_{number}"
        first.target = f"{parent}.{name}" if parent else name
    owner.add_module(name, replacement.eval())
    last.replace_all_uses_with(first)
    for node in reversed(nodes[1:]):
        module.graph.erase_node(node)
        erased.add(node)


def _called(module: fx.GraphModule, node: fx.Node | None, kind: type) -> nn.Module | None:
    if node is None or node.op != "call_module":
        return None
    called = module.get_submodule(node.target)
    return called if type(called) is kind else None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _operand(layer: Binary | None, node: fx.Node) -> float | torch.Tensor | None:
    """The constant of a Binary called on one tensor (x + c), else None."""
    if layer is None or len(node.args) != 1:
        return None
    return layer.scalar if layer.scalar is not None else layer.constant


def _is(value, number: float) -> bool:
    if isinstance(value, torch.Tensor):
        value = float(value.reshape(-1)[0]) if value.numel() == 1 else None
    return value is not None and math.isclose(value, number, rel_tol=1e-6)


def _gated(module, gate: fx.Node, examples):
    """x * sigmoid(x): SiLU; x * hardsigmoid(x): Hardswish."""
    kind, op_type = {nn.Sigmoid: (nn.SiLU, "Swish"), nn.Hardsigmoid: (nn.Hardswish, "HardSwish")}.get(
        type(module.get_submodule(gate.target)), (None, None))
    product = _only_user(gate)
    if kind is None or _called(module, product, Mul) is None or len(product.args) != 2:
        return None
    if set(product.args) != {gate.args[0], gate}:
        return None
    return [gate, product], kind(), op_type


def _gelu(module, div: fx.Node, examples):
    """x * (erf(x / sqrt(2)) + 1) * 0.5, as torch.onnx writes nn.GELU() before opset 20."""
    x = div.args[0]
    layer = _called(module, div, Div)
    if not _is(_operand(layer, div), math.sqrt(2)) or layer.constant_first:
        return None
    erf = _only_user(div)
    plus_one = _only_user(erf) if _called(module, erf, Erf) is not None else None
    if plus_one is None or not _is(_operand(_called(module, plus_one, Add), plus_one), 1.0):
        return None
    product = _only_user(plus_one)
    if _called(module, product, Mul) is None or len(product.args) != 2 or set(product.args) != {x, plus_one}:
        return None
    half = _only_user(product)
    if half is None or not _is(_operand(_called(module, half, Mul), half), 0.5):
        return None
    return [div, erf, plus_one, product, half], nn.GELU(), "Gelu"


def _layer_norm(module, mean: fx.Node, examples):
    """(x - mean) / sqrt(var + eps) [* weight] [+ bias] over the last axes, as torch.onnx writes
    nn.LayerNorm before opset 17."""
    first = _called(module, mean, ReduceMean)
    if first is None or not first.keepdims or not isinstance(examples.get(mean.args[0]), torch.Tensor):
        return None
    x = mean.args[0]
    shape = list(examples[x].shape)
    if 0 in first.axes or first.axes != list(range(len(shape) - len(first.axes), len(shape))):
        return None
    centred = _only_user(mean)
    if _called(module, centred, Sub) is None or centred.args != (x, mean) or len(centred.users) != 2:
        return None
    square, quotient = sorted(centred.users, key=lambda n: _called(module, n, Pow) is None)
    if not _is(_operand(_called(module, square, Pow), square), 2.0):
        return None
    variance = _only_user(square)
    second = _called(module, variance, ReduceMean)
    if second is None or (second.axes, second.keepdims) != (first.axes, True):
        return None
    plus_eps = _only_user(variance)
    epsilon = _operand(_called(module, plus_eps, Add), plus_eps)
    if epsilon is None or (isinstance(epsilon, torch.Tensor) and epsilon.numel() != 1):
        return None
    root = _only_user(plus_eps)
    if _called(module, root, Sqrt) is None or _only_user(root) is not quotient:
        return None
    if _called(module, quotient, Div) is None or quotient.args != (centred, root):
        return None
    nodes = [mean, centred, square, variance, plus_eps, root, quotient]
    normalized = shape[len(shape) - len(first.axes):]
    affine = {}
    for name, kind in (("weight", Mul), ("bias", Add)):
        after = _only_user(nodes[-1])
        value = _operand(_called(module, after, kind), after) if after is not None else None
        value = _fitted(value, normalized)
        if value is not None:
            affine[name] = value
            nodes.append(after)
    layer = nn.LayerNorm(normalized, eps=float(epsilon), bias="bias" in affine)
    layer.weight.data = affine.get("weight", torch.ones(normalized))
    if "bias" in affine:
        layer.bias.data = affine["bias"]
    return nodes, layer, "LayerNormalization"


def _fitted(value, shape: list[int]) -> torch.Tensor | None:
    """A constant as a tensor of `shape`, if it broadcasts along those axes only."""
    if value is None:
        return None
    value = torch.as_tensor(value, dtype=torch.float32)
    if value.dim() > len(shape):
        return None
    try:
        return torch.broadcast_to(value, shape).contiguous().clone()
    except RuntimeError:
        return None


def _linear_bias(module, linear: fx.Node, examples):
    """A Linear layer without bias (a MatMul) and the Add of a bias along its outputs."""
    layer = _called(module, linear, nn.Linear)
    if layer is None or layer.bias is not None:
        return None
    add = _only_user(linear)
    bias = _fitted(_operand(_called(module, add, Add), add) if add is not None else None, [layer.out_features])
    if bias is None:
        return None
    fused = nn.Linear(layer.in_features, layer.out_features)
    fused.weight.data, fused.bias.data = layer.weight.data, bias
    return [linear, add], fused, "MatMul"


def collapse(module: fx.GraphModule, scopes: set[str]) -> None:
    """A module torch.onnx wrote as several nodes is a container of their modules (onnx_ops.module_paths);
    one that holds a single module once fused and pruned (the rest were constants and sizes) is that module."""
    for scope in sorted(scopes, key=lambda path: -path.count(".")):
        try:
            container = module.get_submodule(scope)
        except AttributeError:
            continue
        children = list(container.named_children())
        if len(children) != 1:
            continue
        name, child = children[0]
        parent, _, last = scope.rpartition(".")
        module.get_submodule(parent).add_module(last, child)
        for node in module.graph.nodes:
            if node.op == "call_module" and node.target == f"{scope}.{name}":
                node.target = scope
    module.recompile()
