"""ONNX nodes as torch modules: the graph builder and one converter per supported op type.

`GraphBuilder` turns the nodes of an ONNX graph, in order, into a torch.fx graph over one
`nn.Module` tree: each node that computes on tensors becomes a module call, at a module path made
from the node's name (torch.onnx's `/layer1/layer1.0/conv1/Conv` becomes `layer1.0.conv1`), so the
audit's layer list reads like the original model's. Weights come from the initializers: a Conv is an
`nn.Conv2d` with the Conv's weights, a Gemm with constant weights an `nn.Linear`, a BatchNormalization
an `nn.BatchNorm2d` with its statistics as buffers; ops torch has no module for use onnx_modules.py's
(`Add`, `Reshape`, ...). Every call also runs once on an example batch as it is added, so each
value's shape is known while converting (auto_pad, Squeeze without axes).

Integer tensors computed from shapes (`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, as
torch.onnx writes `x.view(x.size(0), -1)`) are not tensors here: a `Shape` value holds their items,
ints or graph nodes giving a size when the graph runs, so the batch size stays symbolic for
torch.export. Nodes whose inputs are all constants are computed once while converting.

Any op or attribute outside what is written here is refused with one line naming the op and node.
"""

from __future__ import annotations

import keyword
import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import BadInput
from ..limits import MAX_ONNX_VALUE_ELEMENTS
from .onnx_modules import (Add, AveragePool, Binary, Clip, Concat, Div, Erf, Flatten, Gather, Gemm, HardSigmoid,
                           LogSoftmax, MatMul, Mul, Pad, Pow, PRelu, ReduceMax, ReduceMean, ReduceSum, Reshape, Resize,
                           Selu, Slice, Softmax, Split, Sqrt, Squeeze, Sub, Transpose, Unsqueeze, Upsample)

EXAMPLE_BATCH = 2
MAX_PATH_PARTS = 8
MAX_PART_CHARS = 64


@dataclass
class Shape:
    """A 1-D (or, `scalar`, 0-D) integer tensor made from tensor sizes; items are ints or graph nodes."""
    items: list
    scalar: bool = False


Value = fx.Node | torch.Tensor | Shape


class GraphBuilder:
    def __init__(self, source: str, opset: int, example: torch.Tensor, plan: PathPlan):
        self.source, self.opset = source, opset
        self.root = nn.Module()
        self.graph = fx.Graph()
        self.examples: dict[fx.Node, object] = {}
        self.names = PathClaims(plan.paths)
        self.node = None      # the ONNX node being converted
        self.path = ""        # its module path
        self.repeat = None    # the path of the module it may be another call of (PathPlan.repeats)
        self.input = self.graph.placeholder("input")
        self.examples[self.input] = example
        self._constants = 0

    # --- messages ---------------------------------------------------------------------------
    def refuse(self, why: str) -> BadInput:
        return BadInput(f"{self.source}: {self.node.op_type} node {shown(self.node.name or self.path)} {why}")

    # --- adding calls -------------------------------------------------------------------------
    def module(self, module: nn.Module, *args, suffix: str = "") -> fx.Node:
        """Call `module` (added at this node's path, or a sibling path ending in `suffix`) on args."""
        if not suffix and self.repeat is not None and _same_module(_submodule(self.root, self.repeat), module):
            return self._run(self.graph.call_module(self.repeat, tuple(args)))
        path = self.names.claim(self.path + suffix)
        _add_module(self.root, path, module.eval())
        return self._run(self.graph.call_module(path, tuple(args)))

    def function(self, target: Callable, *args) -> fx.Node:
        return self._run(self.graph.call_function(target, tuple(args)))

    def size(self, tensor: fx.Node, dim: int) -> int | fx.Node:
        """Size `dim` of a tensor: an int where it cannot depend on the batch, else a graph node."""
        if dim != 0 and tensor is self.input:
            return int(self.examples[tensor].shape[dim])
        return self._run(self.graph.call_method("size", (tensor, dim)))

    def _run(self, node: fx.Node) -> fx.Node:
        args = fx.node.map_arg(node.args, self.examples.__getitem__)
        try:
            with torch.no_grad():
                if node.op == "call_module":
                    value = self.root.get_submodule(node.target)(*args)
                elif node.op == "call_method":
                    value = getattr(args[0], node.target)(*args[1:])
                else:
                    value = node.target(*args)
        except BadInput:
            raise
        except Exception as exc:
            raise self.refuse(f"cannot run on the model's input ({_first_line(exc)})") from None
        if isinstance(value, torch.Tensor):
            self.check_elements(value.shape)
        self.examples[node] = value
        return node

    def check_elements(self, shape: Sequence[int]) -> None:
        """A value past the limit for one image is refused before (or right after) it is made."""
        elements = math.prod(int(v) for v in shape[1:]) if len(shape) else 1
        if elements > MAX_ONNX_VALUE_ELEMENTS or any(int(v) < 0 for v in shape):
            raise self.refuse(f"makes a tensor of shape {list(map(int, shape))}; at most "
                              f"{MAX_ONNX_VALUE_ELEMENTS:,} values per image are accepted")

    # --- values -------------------------------------------------------------------------------
    def example(self, value: Value):
        if isinstance(value, fx.Node):
            return self.examples[value]
        if isinstance(value, Shape):
            return [self.examples[v] if isinstance(v, fx.Node) else v for v in value.items]
        return value

    def rank(self, value: Value) -> int:
        example = self.example(value)
        return example.dim() if isinstance(example, torch.Tensor) else (0 if value.scalar else 1)

    def tensor(self, value: Value) -> fx.Node:
        """The value as a float tensor in the graph; a constant becomes a buffer of the root module."""
        if isinstance(value, fx.Node):
            if not isinstance(self.examples[value], torch.Tensor):
                raise self.refuse("takes a computed size where a tensor is expected")
            return value
        if isinstance(value, Shape):
            raise self.refuse("takes a computed shape where a float tensor is expected")
        name = f"{CONSTANTS}{self._constants}"
        self._constants += 1
        self.root.register_buffer(name, float_tensor(value))
        node = self.graph.get_attr(name)
        self.examples[node] = getattr(self.root, name)
        return node

    def constant(self, value: Value | None, what: str, required: bool = True) -> torch.Tensor | None:
        """A constant input (an initializer or a Constant's output)."""
        if value is None:
            if required:
                raise self.refuse(f"lacks its {what}")
            return None
        if isinstance(value, Shape) and all(isinstance(v, int) for v in value.items):
            return torch.tensor(value.items if not value.scalar else value.items[0])
        if not isinstance(value, torch.Tensor):
            raise self.refuse(f"computes its {what} in the graph; only a constant {what} (an initializer) is supported")
        return value

    def ints(self, value: Value | None, what: str) -> list[int] | None:
        constant = self.constant(value, what, required=False)
        if constant is None:
            return None
        if constant.is_floating_point() or constant.is_complex():
            raise self.refuse(f"has a non-integer {what}")
        return [int(v) for v in constant.reshape(-1).tolist()]


class PathClaims:
    """Module paths as modules are added: a node's planned path (or a sibling, `conv1_pad`), numbered
    (`act_2`) when taken. Nodes that add no module (Constant, size arithmetic) claim none, so the module
    a scope's nodes compute (`/act/Constant`, `/act/Div`, ...) takes the plain path of the scope. No path
    is both a module and a container of modules."""

    def __init__(self, planned: list[str]):
        self.taken: set[str] = set()
        self.containers = {".".join(p.split(".")[:i]) for p in planned for i in range(1, p.count(".") + 1)}

    def claim(self, path: str) -> str:
        base, number = path, 1
        while path in self.taken or path in self.containers:
            number += 1
            path = f"{base}_{number}"
        self.taken.add(path)
        return path


@dataclass
class PathPlan:
    paths: list[str]               # each node's planned module path
    repeats: list[str | None]      # for a node torch.onnx named as a module's next call, that module's path
    grouped: set[str]              # containers of the nodes of one module (see module_paths)


def module_paths(nodes: Sequence) -> PathPlan:
    """The planned module path of each node, from its name: scope parts joined by dots, the op type dropped
    where the name ends with it (torch.onnx's names), parts every node shares dropped. Several nodes may
    plan one path; PathClaims numbers them as they add modules.

    A module torch.onnx wrote as several nodes (`/stem/stem.1/Transpose`, `.../LayerNormalization`,
    `.../Transpose_1`) becomes a container of them (`stem.1.Transpose`, ...), whose output is the module's;
    these scopes are `grouped`, to be made one module again where they end up holding one (onnx_fusion).
    A module called again is named with a number (`/layer1/relu_1/Relu` for the second call of
    `layer1.relu`): the node is another call of that module where it computes the same (`repeats`), so the
    layer `layer1.relu` is its last call, as in the original."""
    parts = [_name_parts(node.name, node.op_type, index) for index, node in enumerate(nodes)]
    full = [scope + ([tail] if tail else []) for scope, tail in parts]
    shared = _shared_prefix(full)
    parts = [(scope[shared:], tail) for scope, tail in parts]
    scopes = {tuple(scope) for scope, _ in parts}
    enclosing = {tuple(scope[:i]) for scope, _ in parts for i in range(1, len(scope))}
    tails: dict[tuple[str, ...], set[str]] = {}
    for scope, tail in parts:
        if scope and tail and tuple(scope) not in enclosing:
            tails.setdefault(tuple(scope), set()).add(tail)
    grouped = {scope for scope, names in tails.items() if len(names) > 1}
    candidates = [scope + [tail] if tuple(scope) in grouped and tail else
                  scope if tail and scope else scope + ([tail] if tail else []) for scope, tail in parts]
    candidates = [c or [_part(node.op_type)] for c, node in zip(candidates, nodes)]
    containers = {tuple(c[:i]) for c in candidates for i in range(1, len(c))}
    paths, repeats = [], []
    for candidate, (scope, tail), node in zip(candidates, parts, nodes):
        if tuple(candidate) in containers:   # a functional op inside a block: /layer1/layer1.0/Add
            candidate = scope + [tail or _part(node.op_type)]
        paths.append(".".join(candidate))
        first_call = [re.sub(r"_\d+$", "", part) for part in scope]
        repeats.append(".".join(first_call + candidate[len(scope):])
                       if first_call != scope and tuple(first_call) in scopes else None)
    return PathPlan(paths, repeats, {".".join(scope) for scope in grouped})


def _name_parts(name: str, op_type: str, index: int) -> tuple[list[str], str | None]:
    """(scope parts, op part or None) of a node name."""
    raw = [p for p in (name or "").split("/") if p]
    if not raw:
        return [f"{_part(op_type)}_{index}"], None
    # torch.onnx repeats the scope: /layer1/layer1.0/conv1 -> layer1.0/conv1
    kept = [p for i, p in enumerate(raw) if not (i + 1 < len(raw) and raw[i + 1].startswith(p + "."))]
    pieces = [_part(piece) for p in kept for piece in p.split(".") if piece]
    pieces = pieces[-MAX_PATH_PARTS:] or [f"{_part(op_type)}_{index}"]
    if len(pieces) > 1 and re.fullmatch(re.escape(_part(op_type)) + r"(_\d+)?", pieces[-1]):
        return pieces[:-1], pieces[-1]
    return pieces, None


def _shared_prefix(names: list[list[str]]) -> int:
    """How many leading parts every name shares, keeping at least one part of each."""
    if not names:
        return 0
    shortest = min(len(n) for n in names)
    count = 0
    while count < shortest - 1 and len({n[count] for n in names}) == 1:
        count += 1
    return count


CONSTANTS = "onnx_constant_"   # the root module's buffers for constant operands: onnx_constant_0, ...
# Names a module path may not take: the graph module's own attributes (graph, code, forward, ...)
RESERVED = set(dir(fx.GraphModule(nn.Module(), fx.Graph()))) | {"input"}


def _part(text: str) -> str:
    """One part of a module path: a word of ASCII letters, digits and underscores that names no attribute
    of a module, and starts like none of the names torch or the builder give attributes."""
    part = re.sub(r"\W", "_", text, flags=re.ASCII)[:MAX_PART_CHARS] or "_"
    if part.startswith(("_", CONSTANTS)):
        part = "n" + part
    return part + "_" if keyword.iskeyword(part) or part in RESERVED else part


def _submodule(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _same_module(a: nn.Module | None, b: nn.Module) -> bool:
    """Modules of one type, settings and weights: one module's calls."""
    if type(a) is not type(b):
        return False
    settings = [{k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"} for m in (a, b)]
    if settings[0].keys() != settings[1].keys() or any(
            not _same_value(settings[0][k], settings[1][k]) for k in settings[0]):
        return False
    state = [m.state_dict() for m in (a, b)]
    return state[0].keys() == state[1].keys() and all(
        state[0][k].shape == state[1][k].shape and torch.equal(state[0][k], state[1][k]) for k in state[0])


def _same_value(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    return type(a) is type(b) and a == b


def _add_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent = root
    *scope, name = path.split(".")
    for part in scope:
        if part not in parent._modules:
            parent.add_module(part, nn.Module())
        parent = parent._modules[part]
    parent.add_module(name, module)


def shown(text: str) -> str:
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:200]


def float_tensor(value: torch.Tensor) -> torch.Tensor:
    return value.float() if value.is_floating_point() else value


# --- converters ---------------------------------------------------------------------------------
# Each takes the builder, the node's attributes and its inputs (None for an omitted optional input)
# and returns its outputs.

Converter = Callable[[GraphBuilder, dict, list], list]
CONVERTERS: dict[str, Converter] = {}


def converts(*op_types: str):
    def register(function: Converter) -> Converter:
        for op_type in op_types:
            CONVERTERS[op_type] = function
        return function
    return register


def _spatial(b: GraphBuilder, x: Value, what: str) -> int:
    dims = b.rank(x) - 2
    if dims not in (1, 2, 3):
        raise b.refuse(f"takes a {dims + 2}-dimensional input; {what} over 1 to 3 spatial dimensions is supported")
    return dims


def _pads(b: GraphBuilder, attrs: dict, x: Value, kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial dimension, auto_pad resolved on the input's size."""
    dims = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        pads = list(attrs.get("pads", [0] * 2 * dims))
        if len(pads) != 2 * dims:
            raise b.refuse(f"has {len(pads)} pads for {dims} spatial dimensions")
        return pads[:dims], pads[dims:]
    if auto_pad == "VALID":
        return [0] * dims, [0] * dims
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise b.refuse(f"has auto_pad {shown(auto_pad)}")
    sizes = b.example(x).shape[2:]
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else big)
        end.append(big if auto_pad == "SAME_UPPER" else small)
    return begin, end


def _torch_pads(begin: Sequence[int], end: Sequence[int]) -> list[int]:
    """ONNX (begin..., end...) per dimension as F.pad's (last dim begin, end, ..., first dim begin, end)."""
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _check_padded(b: GraphBuilder, x: Value, begin: Sequence[int], end: Sequence[int]) -> None:
    shape = list(b.example(x).shape)
    dims = len(begin)
    b.check_elements(shape[:-dims] + [s + p + q for s, p, q in zip(shape[-dims:], begin, end)])


def _symmetric_padding(begin: Sequence[int], end: Sequence[int], kernel: Sequence[int]) -> bool:
    return list(begin) == list(end) and all(0 <= p <= k // 2 for p, k in zip(begin, kernel))


@converts("Conv")
def conv(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    weight = float_tensor(b.constant(inputs[1], "weight"))
    bias = b.constant(inputs[2] if len(inputs) > 2 else None, "bias", required=False)
    dims = _spatial(b, x, "convolution")
    kernel = list(weight.shape[2:])
    if list(attrs.get("kernel_shape", kernel)) != kernel or weight.dim() != dims + 2:
        raise b.refuse("has a kernel_shape that does not match its weight")
    strides = list(attrs.get("strides", [1] * dims))
    dilations = list(attrs.get("dilations", [1] * dims))
    groups = int(attrs.get("group", 1))
    begin, end = _pads(b, attrs, x, kernel, strides, dilations)
    _check_padded(b, x, begin, end)
    channels = b.example(x).shape[1]
    if groups < 1 or channels != weight.shape[1] * groups or weight.shape[0] % groups:
        raise b.refuse(f"has a weight of shape {list(weight.shape)} for {channels} input channels in {groups} groups")
    symmetric = list(begin) == list(end)
    if not symmetric:
        x = b.module(Pad(_torch_pads(begin, end)), b.tensor(x), suffix="_pad")
    layer = getattr(nn, f"Conv{dims}d")(channels, weight.shape[0], kernel, strides, begin if symmetric else 0,
                                        dilations, groups, bias is not None)
    return [b.module(_loaded(layer, weight, bias), b.tensor(x))]


def _loaded(layer: nn.Module, weight: torch.Tensor, bias) -> nn.Module:
    """A convolution module holding the node's weight and (optional) bias."""
    layer.weight.data = weight.contiguous()
    if bias is not None:
        layer.bias.data = float_tensor(bias).reshape(-1).contiguous()
    return layer


@converts("ConvTranspose")
def conv_transpose(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    weight = float_tensor(b.constant(inputs[1], "weight"))
    bias = b.constant(inputs[2] if len(inputs) > 2 else None, "bias", required=False)
    dims = _spatial(b, x, "transposed convolution")
    kernel = list(weight.shape[2:])
    strides = list(attrs.get("strides", [1] * dims))
    dilations = list(attrs.get("dilations", [1] * dims))
    output_padding = list(attrs.get("output_padding", [0] * dims))
    groups = int(attrs.get("group", 1))
    if "output_shape" in attrs or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        raise b.refuse("sets output_shape or auto_pad SAME; give explicit pads instead")
    begin, end = _pads(b, attrs, x, kernel, strides, dilations)
    if begin != end:
        raise b.refuse("has asymmetric pads; only symmetric pads are supported for ConvTranspose")
    channels = b.example(x).shape[1]
    if groups < 1 or channels != weight.shape[0] or channels % groups:
        raise b.refuse(f"has a weight of shape {list(weight.shape)} for {channels} input channels in {groups} groups")
    sizes = b.example(x).shape[2:]
    out = [(n - 1) * s - 2 * p + d * (k - 1) + o + 1
           for n, s, p, d, k, o in zip(sizes, strides, begin, dilations, kernel, output_padding)]
    b.check_elements([1, weight.shape[1] * groups, *out])
    layer = getattr(nn, f"ConvTranspose{dims}d")(channels, weight.shape[1] * groups, kernel, strides, begin,
                                                 output_padding, groups, bias is not None, dilations)
    return [b.module(_loaded(layer, weight, bias), b.tensor(x))]


@converts("BatchNormalization")
def batch_norm(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    if attrs.get("training_mode", 0):
        raise b.refuse("is in training mode; export the model in inference mode (model.eval())")
    x = inputs[0]
    scale, shift, mean, var = (float_tensor(b.constant(inputs[i] if len(inputs) > i else None, what)).reshape(-1)
                               for i, what in enumerate(("scale", "bias", "mean", "variance"), start=1))
    rank = b.rank(x)
    kind = {2: "1d", 3: "1d", 4: "2d", 5: "3d"}.get(rank)
    channels = b.example(x).shape[1] if rank > 1 else 0
    if kind is None or any(t.numel() != channels for t in (scale, shift, mean, var)):
        raise b.refuse(f"has statistics that do not fit its {rank}-dimensional input")
    layer = getattr(nn, f"BatchNorm{kind}")(channels, eps=float(attrs.get("epsilon", 1e-5)))
    layer.weight.data, layer.bias.data = scale.clone(), shift.clone()
    layer.running_mean.data, layer.running_var.data = mean.clone(), var.clone()
    return [b.module(layer, b.tensor(x))]


def _unary(make: Callable[[dict], nn.Module]) -> Converter:
    def convert(b: GraphBuilder, attrs: dict, inputs: list) -> list:
        return [b.module(make(attrs), b.tensor(inputs[0]))]
    return convert


CONVERTERS.update({
    "Relu": _unary(lambda attrs: nn.ReLU()),
    "LeakyRelu": _unary(lambda attrs: nn.LeakyReLU(float(attrs.get("alpha", 0.01)))),
    "Sigmoid": _unary(lambda attrs: nn.Sigmoid()),
    "Tanh": _unary(lambda attrs: nn.Tanh()),
    "HardSwish": _unary(lambda attrs: nn.Hardswish()),
    "Sqrt": _unary(lambda attrs: Sqrt()),
    "Erf": _unary(lambda attrs: Erf()),
    # torch's Softplus returns x past x = 20, where log(1 + e^x) is x within 2e-9
    "Softplus": _unary(lambda attrs: nn.Softplus()),
    "Elu": _unary(lambda attrs: nn.ELU(float(attrs.get("alpha", 1.0)))),
})

SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875   # ONNX's defaults, torch's constants


@converts("Selu")
def selu(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    alpha, gamma = float(attrs.get("alpha", SELU_ALPHA)), float(attrs.get("gamma", SELU_GAMMA))
    standard = math.isclose(alpha, SELU_ALPHA, rel_tol=1e-6) and math.isclose(gamma, SELU_GAMMA, rel_tol=1e-6)
    return [b.module(nn.SELU() if standard else Selu(alpha, gamma), b.tensor(inputs[0]))]


@converts("Gelu")
def gelu(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    approximate = attrs.get("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise b.refuse(f"has approximate {shown(approximate)}; none and tanh are supported")
    return [b.module(nn.GELU(approximate), b.tensor(inputs[0]))]


@converts("Swish")
def swish(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    alpha = float(attrs.get("alpha", 1.0))
    if alpha != 1.0:
        raise b.refuse(f"has alpha {alpha:g}; only x * sigmoid(x) (alpha 1, torch's SiLU) is supported")
    return [b.module(nn.SiLU(), b.tensor(inputs[0]))]


@converts("PRelu")
def prelu(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    slope = float_tensor(b.constant(inputs[1], "slope"))
    shape = b.example(x).shape
    channels = shape[1] if len(shape) > 1 else 0
    # nn.PReLU's weight is one slope, or one per channel: (C, 1, 1) on a map, (C,) on a vector
    per_channel = (slope.numel() == channels and slope.dim() == len(shape) - 1
                   and list(slope.shape[1:]) == [1] * (slope.dim() - 1))
    if slope.numel() == 1 or per_channel:
        layer = nn.PReLU(slope.numel())
        layer.weight.data = slope.reshape(-1).clone()
    else:
        layer = PRelu(slope)
    return [b.module(layer, b.tensor(x))]


@converts("LayerNormalization")
def layer_norm(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    shape = list(b.example(x).shape)
    axis = _axis(b, int(attrs.get("axis", -1)), len(shape))
    if axis == 0:
        raise b.refuse("normalizes over the batch axis")
    normalized = shape[axis:]
    scale = float_tensor(b.constant(inputs[1] if len(inputs) > 1 else None, "scale"))
    bias = b.constant(inputs[2] if len(inputs) > 2 else None, "bias", required=False)
    layer = nn.LayerNorm(normalized, eps=float(attrs.get("epsilon", 1e-5)), bias=bias is not None)
    layer.weight.data = _broadcast(b, scale, normalized, "scale")
    if bias is not None:
        layer.bias.data = _broadcast(b, float_tensor(bias), normalized, "bias")
    return [b.module(layer, b.tensor(x)), None, None]   # the mean and inverse deviation outputs: not given


def _broadcast(b: GraphBuilder, value: torch.Tensor, shape: list[int], what: str) -> torch.Tensor:
    try:
        if value.dim() > len(shape):
            raise RuntimeError
        return torch.broadcast_to(value, shape).contiguous().clone()
    except RuntimeError:
        raise b.refuse(f"has a {what} of shape {list(value.shape)} for the normalized shape {shape}") from None


@converts("HardSigmoid")
def hard_sigmoid(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
    # torch's Hardsigmoid is alpha 1/6, beta 0.5; ONNX's float attribute rounds 1/6 to float32
    standard = math.isclose(alpha, 1 / 6, rel_tol=1e-6) and beta == 0.5
    return [b.module(nn.Hardsigmoid() if standard else HardSigmoid(alpha, beta), b.tensor(inputs[0]))]


@converts("Clip")
def clip(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    if b.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low, high = (b.constant(inputs[i] if len(inputs) > i else None, what, required=False)
                     for i, what in ((1, "min"), (2, "max")))
        low, high = (None if v is None else float(v.reshape(-1)[0]) for v in (low, high))
    low = None if low is None or low == -math.inf else float(low)
    high = None if high is None or high == math.inf else float(high)
    if low == 0.0 and high == 6.0:
        layer = nn.ReLU6()
    elif low == 0.0 and high is None:
        layer = nn.ReLU()
    elif low is not None and high is not None:
        layer = nn.Hardtanh(low, high)
    else:
        layer = Clip(low, high)
    return [b.module(layer, b.tensor(inputs[0]))]


@converts("GlobalAveragePool", "GlobalMaxPool")
def global_pool(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    dims = _spatial(b, inputs[0], "global pooling")
    kind = "Avg" if b.node.op_type == "GlobalAveragePool" else "Max"
    return [b.module(getattr(nn, f"Adaptive{kind}Pool{dims}d")(1), b.tensor(inputs[0]))]


@converts("MaxPool", "AveragePool")
def pool(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    dims = _spatial(b, x, "pooling")
    kernel = list(attrs.get("kernel_shape", []))
    if len(kernel) != dims:
        raise b.refuse(f"has kernel_shape {kernel} for {dims} spatial dimensions")
    strides = list(attrs.get("strides", [1] * dims))
    dilations = list(attrs.get("dilations", [1] * dims))
    ceil_mode = bool(attrs.get("ceil_mode", 0))
    begin, end = _pads(b, attrs, x, kernel, strides, dilations)
    _check_padded(b, x, begin, end)
    tensor = b.tensor(x)
    if b.node.op_type == "MaxPool":
        if attrs.get("storage_order", 0):
            raise b.refuse("has storage_order 1 (column-major indices)")
        if _symmetric_padding(begin, end, kernel):
            return [b.module(getattr(nn, f"MaxPool{dims}d")(kernel, strides, begin, dilations, ceil_mode=ceil_mode),
                             tensor), None]
        padded = b.module(Pad(_torch_pads(begin, end), value=-math.inf), tensor, suffix="_pad")
        return [b.module(getattr(nn, f"MaxPool{dims}d")(kernel, strides, 0, dilations, ceil_mode=ceil_mode),
                         padded), None]
    if any(d != 1 for d in dilations):
        raise b.refuse("has dilations; average pooling with dilations is not supported")
    count_pad = bool(attrs.get("count_include_pad", 0))
    if _symmetric_padding(begin, end, kernel):
        layer = getattr(nn, f"AvgPool{dims}d")(kernel, strides, begin, ceil_mode, count_pad)
        return [b.module(layer, tensor)]
    divisor = None
    if not count_pad:
        ones = F.pad(torch.ones(1, 1, *b.example(x).shape[2:]), _torch_pads(begin, end))
        divisor = getattr(F, f"avg_pool{dims}d")(ones, kernel, strides, 0, ceil_mode, True)
    return [b.module(AveragePool(dims, kernel, strides, ceil_mode, _torch_pads(begin, end), divisor), tensor)]


def _binary(layer: type[Binary], fold: Callable) -> Converter:
    def convert(b: GraphBuilder, attrs: dict, inputs: list) -> list:
        a, c = inputs[0], inputs[1]
        if isinstance(a, Shape) or isinstance(c, Shape):
            return [_shape_arithmetic(b, a, c)]
        if isinstance(a, torch.Tensor) and isinstance(c, torch.Tensor):
            return [fold(a, c)]
        if isinstance(a, fx.Node) and isinstance(c, fx.Node):
            return [b.module(layer(), a, c)]
        tensor, constant = (a, c) if isinstance(a, fx.Node) else (c, a)
        constant = float_tensor(constant)
        operand = (float(constant.reshape(-1)[0]) if constant.numel() == 1 and constant.dim() <= b.rank(tensor)
                   else constant)
        return [b.module(layer(operand, constant_first=tensor is c), b.tensor(tensor))]
    return convert


CONVERTERS.update({
    "Add": _binary(Add, operator.add), "Sub": _binary(Sub, operator.sub),
    "Mul": _binary(Mul, operator.mul), "Div": _binary(Div, lambda a, c: torch.div(a, c, rounding_mode="trunc")
                                                      if not (a.is_floating_point() or c.is_floating_point())
                                                      else a / c),
    "Pow": _binary(Pow, torch.pow),
})


def _shape_arithmetic(b: GraphBuilder, a: Value, c: Value) -> Shape:
    """Arithmetic on sizes: items combined one by one (a single item broadcasts); sizes divide whole."""
    left, right = (_shape_of(b, v) for v in (a, c))
    if len(left.items) != len(right.items) and 1 not in (len(left.items), len(right.items)):
        raise b.refuse("combines sizes of different lengths")
    count = max(len(left.items), len(right.items))
    python_op = {"Add": operator.add, "Sub": operator.sub, "Mul": operator.mul, "Div": operator.floordiv,
                 "Pow": operator.pow}[b.node.op_type]
    items = []
    for i in range(count):
        x, y = left.items[i if len(left.items) > 1 else 0], right.items[i if len(right.items) > 1 else 0]
        items.append(python_op(x, y) if isinstance(x, int) and isinstance(y, int) else b.function(python_op, x, y))
    return Shape(items, left.scalar and right.scalar)


def _shape_of(b: GraphBuilder, value: Value) -> Shape:
    if isinstance(value, Shape):
        return value
    if isinstance(value, torch.Tensor) and not value.is_floating_point() and value.dim() <= 1:
        return Shape([int(v) for v in value.reshape(-1).tolist()], value.dim() == 0)
    raise b.refuse("mixes computed sizes with tensors; only integer size arithmetic is supported")


@converts("MatMul")
def matmul(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    a, c = inputs
    if isinstance(a, torch.Tensor) and isinstance(c, torch.Tensor):
        return [torch.matmul(float_tensor(a), float_tensor(c))]
    if isinstance(c, torch.Tensor) and c.dim() == 2 and b.rank(a) >= 2:
        weight = float_tensor(c)
        layer = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
        layer.weight.data = weight.t().contiguous()
        return [b.module(layer, b.tensor(a))]
    if isinstance(a, fx.Node) and isinstance(c, fx.Node):
        return [b.module(MatMul(), b.tensor(a), b.tensor(c))]
    tensor, constant = (a, c) if isinstance(a, fx.Node) else (c, a)
    return [b.module(MatMul(float_tensor(constant), constant_first=tensor is c), b.tensor(tensor))]


@converts("Gemm")
def gemm(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    a, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    trans_a, trans_b = bool(attrs.get("transA", 0)), bool(attrs.get("transB", 0))
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if b.rank(a) != 2:
        raise b.refuse(f"takes a {b.rank(a)}-dimensional input; Gemm multiplies matrices")
    if isinstance(weight, torch.Tensor) and not trans_a and (bias is None or isinstance(bias, torch.Tensor)):
        matrix = float_tensor(weight)
        matrix = matrix if trans_b else matrix.t()   # (out, in), as nn.Linear keeps it
        out = matrix.shape[0]
        if bias is None or bias.numel() in (1, out) and (bias.dim() < 2 or bias.shape[0] == 1):
            layer = nn.Linear(matrix.shape[1], out, bias=bias is not None)
            layer.weight.data = (matrix * alpha).contiguous()
            if bias is not None:
                layer.bias.data = (float_tensor(bias).reshape(-1).expand(out) * beta).contiguous()
            return [b.module(layer, b.tensor(a))]
    constants = [float_tensor(v) if isinstance(v, torch.Tensor) else None for v in (weight, bias)]
    computed = [b.tensor(v) if isinstance(v, fx.Node) else None for v in (weight, bias)]
    layer = Gemm(trans_a, trans_b, alpha, beta, *constants)
    return [b.module(layer, b.tensor(a), *computed)]


def _axis(b: GraphBuilder, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise b.refuse(f"has axis {axis} for a {rank}-dimensional input")
    return axis % rank


@converts("Concat")
def concat(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    parts = [v for v in inputs if v is not None]
    if any(isinstance(v, Shape) for v in parts) or all(
            isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dim() == 1 for v in parts):
        return [Shape([item for v in parts for item in _shape_of(b, v).items])]
    if all(isinstance(v, torch.Tensor) for v in parts):
        return [torch.cat(parts, int(attrs["axis"]))]
    rank = b.rank(next(v for v in parts if isinstance(v, fx.Node)))
    return [b.module(Concat(_axis(b, int(attrs.get("axis", 0)), rank)), *[b.tensor(v) for v in parts])]


@converts("Flatten")
def flatten(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    rank = b.rank(x)
    axis = int(attrs.get("axis", 1))
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis <= rank:
        raise b.refuse(f"has axis {axis} for a {rank}-dimensional input")
    if isinstance(x, torch.Tensor):
        return [x.reshape(math.prod(x.shape[:axis]), -1)]
    return [b.module(Flatten(axis), b.tensor(x))]


@converts("Reshape")
def reshape(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x, shape = inputs
    if isinstance(shape, torch.Tensor):
        shape = _shape_of(b, shape)
    if not isinstance(shape, Shape):
        raise b.refuse("computes its target shape from tensor values; only sizes and constants are supported")
    if isinstance(x, torch.Tensor):
        if all(isinstance(v, int) for v in shape.items):
            items = [x.shape[i] if v == 0 and not attrs.get("allowzero", 0) else v for i, v in enumerate(shape.items)]
            return [x.reshape(items)]
        raise b.refuse("reshapes a constant to a computed shape")
    if isinstance(x, Shape):
        if shape.items in ([-1], [len(x.items)]) or (shape.items == [] and len(x.items) == 1):
            return [Shape(x.items, scalar=shape.items == [])]
        raise b.refuse("reshapes a computed size")
    items = [b.size(x, i) if isinstance(v, int) and v == 0 and not attrs.get("allowzero", 0) else v
             for i, v in enumerate(shape.items)]
    return [b.module(Reshape(), b.tensor(x), items)]


@converts("Transpose")
def transpose(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    rank = b.rank(x)
    perm = list(attrs.get("perm", list(range(rank))[::-1]))
    if sorted(p % rank if rank else p for p in perm) != list(range(rank)):
        raise b.refuse(f"has perm {perm} for a {rank}-dimensional input")
    if isinstance(x, torch.Tensor):
        return [x.permute(perm)]
    return [b.module(Transpose([p % rank for p in perm]), b.tensor(x))]


def _axes(b: GraphBuilder, attrs: dict, inputs: list) -> list[int] | None:
    """Axes from the attribute (before opset 13) or the second input."""
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    return b.ints(inputs[1] if len(inputs) > 1 else None, "axes")


@converts("Squeeze")
def squeeze(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    axes = _axes(b, attrs, inputs)
    if isinstance(x, Shape):
        if len(x.items) == 1 and (axes is None or axes in ([0], [-1])):
            return [Shape(x.items, scalar=True)]
        raise b.refuse("squeezes a computed size that is not of length 1")
    shape = b.example(x).shape
    rank = len(shape)
    axes = [i for i, size in enumerate(shape) if size == 1] if axes is None else [_axis(b, a, rank) for a in axes]
    if any(shape[a] != 1 for a in axes):
        raise b.refuse(f"squeezes axes {axes} of a tensor of shape {list(shape)}")
    if isinstance(x, torch.Tensor):
        return [x.squeeze(tuple(axes)) if axes else x]
    return [b.module(Squeeze(axes), b.tensor(x))]


@converts("Unsqueeze")
def unsqueeze(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    axes = _axes(b, attrs, inputs)
    if axes is None:
        raise b.refuse("has no axes")
    if isinstance(x, Shape):
        if x.scalar and axes in ([0], [-1]):
            return [Shape(x.items)]
        raise b.refuse("unsqueezes a computed size other than to one dimension")
    rank = b.rank(x) + len(axes)
    axes = [_axis(b, a, rank) for a in axes]
    if isinstance(x, torch.Tensor):
        for axis in sorted(axes):
            x = x.unsqueeze(axis)
        return [x]
    return [b.module(Unsqueeze(axes), b.tensor(x))]


@converts("Softmax", "LogSoftmax")
def softmax(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    rank = b.rank(x)
    axis = _axis(b, int(attrs.get("axis", -1 if b.opset >= 13 else 1)), rank)
    flatten = b.opset < 13 and axis != rank - 1
    layer = (LogSoftmax if b.node.op_type == "LogSoftmax" else Softmax)(axis, b.node.op_type == "LogSoftmax", flatten)
    return [b.module(layer, b.tensor(x))]


REDUCTIONS = {"ReduceMean": ReduceMean, "ReduceMax": ReduceMax, "ReduceSum": ReduceSum}


@converts(*REDUCTIONS)
def reduce(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    rank = b.rank(x)
    axes = _axes(b, attrs, inputs)
    if not axes:
        if attrs.get("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    axes = sorted(_axis(b, a, rank) for a in axes)
    return [b.module(REDUCTIONS[b.node.op_type](axes, bool(attrs.get("keepdims", 1))), b.tensor(x))]


@converts("Split")
def split(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    """Sizes from the attribute (before opset 13) or the input; else num_outputs (opset 18: pieces of
    the rounded-up size, the last smaller) or as many equal pieces as the node has outputs."""
    x = inputs[0]
    if isinstance(x, Shape):
        raise b.refuse("splits a computed size")
    count = len(b.node.output)
    shape = b.example(x).shape
    axis = _axis(b, int(attrs.get("axis", 0)), len(shape))
    size = int(shape[axis])
    sizes = [int(v) for v in attrs["split"]] if "split" in attrs else b.ints(
        inputs[1] if len(inputs) > 1 else None, "split")
    if sizes is None:
        pieces = int(attrs.get("num_outputs", count))
        piece = -(-size // pieces) if pieces > 0 else 0
        sizes = [min(piece, size - i * piece) for i in range(pieces)]
    if len(sizes) != count or sum(sizes) != size or any(v < 0 for v in sizes):
        raise b.refuse(f"splits size {size} of axis {axis} into {sizes} for {count} outputs")
    if isinstance(x, torch.Tensor):
        return list(torch.split(x, sizes, axis))
    if axis == 0:
        raise b.refuse("splits the batch axis")
    pieces = b.module(Split(axis, sizes), b.tensor(x))
    return [b.function(operator.getitem, pieces, i) for i in range(count)]


@converts("Slice")
def slice_(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    """Starts and ends may be sizes computed when the graph runs (torch.onnx's chunk slices at
    size // 2); axes and steps are constants, steps positive."""
    x = inputs[0]
    if b.opset < 10:
        starts, ends = [int(v) for v in attrs.get("starts", [])], [int(v) for v in attrs.get("ends", [])]
        axes, steps = attrs.get("axes"), None
    else:
        starts, ends = (_items(b, inputs[i] if len(inputs) > i else None, what)
                        for i, what in ((1, "starts"), (2, "ends")))
        axes, steps = (b.ints(inputs[i] if len(inputs) > i else None, what) for i, what in ((3, "axes"), (4, "steps")))
    axes = list(range(len(starts))) if axes is None else [int(a) for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise b.refuse(f"has {len(starts)} starts, {len(ends)} ends, {len(axes)} axes and {len(steps)} steps")
    if any(step < 1 for step in steps):
        raise b.refuse(f"has steps {steps}; only positive steps are supported (a step of -1 flips the tensor)")
    known = all(isinstance(v, int) for v in starts + ends)
    if isinstance(x, Shape):
        if not known or axes not in ([0], [-1]):
            raise b.refuse("slices a computed size by computed positions")
        return [Shape(x.items[starts[0]:ends[0]:steps[0]])]
    rank = b.rank(x)
    axes = [_axis(b, a, rank) for a in axes]
    if isinstance(x, torch.Tensor):
        if not known:
            raise b.refuse("slices a constant at computed positions")
        index = [slice(None)] * rank
        for axis, start, end, step in zip(axes, starts, ends, steps):
            index[axis] = slice(start, end, step)
        return [x[tuple(index)]]
    return [b.module(Slice(axes, steps), b.tensor(x), starts, ends)]


def _items(b: GraphBuilder, value: Value | None, what: str) -> list:
    """A 1-D integer input as a list of ints and graph nodes (sizes computed when the graph runs)."""
    if value is None:
        raise b.refuse(f"lacks its {what}")
    if isinstance(value, fx.Node):
        raise b.refuse(f"computes its {what} from tensor values; only sizes and constants are supported")
    return _shape_of(b, value).items


@converts("Upsample")
def upsample(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    """Opset 9's Upsample: nearest by whole factors (torch.onnx writes it for F.interpolate at opset 9)."""
    x = inputs[0]
    dims = _spatial(b, x, "upsampling")
    scales = attrs.get("scales")
    if scales is None:
        scales = b.constant(inputs[1] if len(inputs) > 1 else None, "scales").reshape(-1).tolist()
    scales = [float(v) for v in scales]
    if len(scales) != dims + 2 or scales[:2] != [1.0, 1.0] or any(s < 1 or s != int(s) for s in scales):
        raise b.refuse(f"has scales {scales}; only the spatial axes may be enlarged, by whole factors")
    if attrs.get("mode", "nearest") != "nearest":
        raise b.refuse(f"has mode {shown(attrs['mode'])}; re-export with opset 11 or newer (a Resize) for linear "
                       "upsampling")
    shape = list(b.example(x).shape)
    b.check_elements(shape[:2] + [int(n * s) for n, s in zip(shape[2:], scales[2:])])
    return [b.module(Upsample("nearest", scales[2:], None), b.tensor(x))]


@converts("Identity", "Dropout")
def identity(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    return [inputs[0], None]


@converts("Constant")
def constant(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            value = attrs[key]
            if isinstance(value, torch.Tensor):
                return [value]
            return [torch.tensor(value, dtype=torch.float32 if "float" in key else torch.int64)]
    raise b.refuse("holds a sparse or string value")


@converts("Shape")
def shape(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    if isinstance(x, torch.Tensor):
        items = list(x.shape)
    elif isinstance(x, Shape):
        items = [] if x.scalar else [len(x.items)]
    else:
        items = [b.size(x, i) for i in range(b.rank(x))]
    rank = len(items)
    start, end = int(attrs.get("start", 0)), int(attrs.get("end", rank))
    start, end = (max(0, min(rank, v + rank if v < 0 else v)) for v in (start, end))
    return [Shape(items[start:end])]


@converts("Gather")
def gather(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    data, indices = inputs
    index = b.constant(indices, "indices")
    if index.is_floating_point() or index.dim() > 1:
        raise b.refuse("has indices that are not a constant integer scalar or list")
    positions = [int(v) for v in index.reshape(-1).tolist()]
    if isinstance(data, Shape):
        count = len(data.items)
        if int(attrs.get("axis", 0)) not in (0, -1) or any(not -count <= p < count for p in positions):
            raise b.refuse(f"gathers {positions} from {count} sizes")
        return [Shape([data.items[p] for p in positions], scalar=index.dim() == 0)]
    if isinstance(data, torch.Tensor):
        return [_gather_constant(data, int(attrs.get("axis", 0)), index)]
    rank = b.rank(data)
    axis = _axis(b, int(attrs.get("axis", 0)), rank)
    size = b.example(data).shape[axis]
    if axis == 0 or any(not -size <= p < size for p in positions):
        raise b.refuse(f"gathers {positions} along axis {axis} of size {size} (the batch axis cannot be gathered)")
    return [b.module(Gather(axis, [p % size for p in positions], index.dim() == 0), b.tensor(data))]


def _gather_constant(data: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    axis %= data.dim()
    flat = torch.index_select(data, axis, index.reshape(-1) % data.shape[axis])
    return flat.reshape(*data.shape[:axis], *index.shape, *data.shape[axis + 1:])


@converts("Cast")
def cast(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    from onnx import TensorProto, helper

    x, to = inputs[0], int(attrs["to"])
    if isinstance(x, Shape):
        return [x]
    target = helper.tensor_dtype_to_np_dtype(to)
    if isinstance(x, torch.Tensor):
        return [torch.from_numpy(x.numpy().astype(target))]
    if to != TensorProto.FLOAT:
        raise b.refuse(f"casts the data to {TensorProto.DataType.Name(to).lower()}; the converted model computes in "
                       "float32")
    return [x]


@converts("Pad")
def pad(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    rank = b.rank(x)
    if b.opset < 11:
        pads, value = list(attrs.get("pads", [])), float(attrs.get("value", 0.0))
    else:
        pads = b.ints(inputs[1] if len(inputs) > 1 else None, "pads")
        value_input = b.constant(inputs[2] if len(inputs) > 2 else None, "constant value", required=False)
        value = 0.0 if value_input is None or value_input.numel() == 0 else float(value_input.reshape(-1)[0])
        axes = b.ints(inputs[3] if len(inputs) > 3 else None, "axes")
        if axes is not None and pads is not None:
            full = [0] * 2 * rank
            for i, axis in enumerate(_axis(b, a, rank) for a in axes):
                full[axis], full[axis + rank] = pads[i], pads[i + len(axes)]
            pads = full
    if pads is None or len(pads) != 2 * rank:
        raise b.refuse(f"has {0 if pads is None else len(pads)} pads for a {rank}-dimensional input")
    mode = attrs.get("mode", "constant")
    modes = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}
    if mode not in modes:
        raise b.refuse(f"has mode {shown(mode)}")
    begin, end = pads[:rank], pads[rank:]
    if (begin[0], end[0]) != (0, 0):
        raise b.refuse("pads the batch axis")
    _check_padded(b, x, begin[1:], end[1:])
    # F.pad's non-constant modes pad only the trailing dims: keep the list as short as the pads need
    torch_pads = _torch_pads(begin, end)
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]
    return [b.module(Pad(torch_pads, modes[mode], value), b.tensor(x))]


NEAREST = {("asymmetric", "floor"): "nearest", ("half_pixel", "round_prefer_ceil"): "nearest-exact",
           ("pytorch_half_pixel", "round_prefer_ceil"): "nearest-exact"}
LINEAR = {"half_pixel": False, "pytorch_half_pixel": False, "align_corners": True}


@converts("Resize")
def resize(b: GraphBuilder, attrs: dict, inputs: list) -> list:
    x = inputs[0]
    dims = _spatial(b, x, "resizing")
    if attrs.get("antialias", 0) or attrs.get("axes") or attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise b.refuse("uses antialias, axes or keep_aspect_ratio_policy")
    shape = list(b.example(x).shape)
    scales_at = 2 if b.opset >= 11 else 1   # opset 10's Resize takes (X, scales)
    scales = b.constant(inputs[scales_at] if len(inputs) > scales_at else None, "scales", required=False)
    sizes = inputs[3] if len(inputs) > 3 else None
    if scales is not None and scales.numel():
        scales = [float(v) for v in scales.reshape(-1).tolist()]
        if len(scales) != dims + 2 or scales[:2] != [1.0, 1.0] or any(s <= 0 for s in scales):
            raise b.refuse(f"has scales {scales}; only the spatial axes may be scaled")
        spatial, factors = None, scales[2:]
        out = [math.floor(n * s) for n, s in zip(shape[2:], factors)]
    elif sizes is not None:
        sizes = _shape_of(b, sizes)
        if len(sizes.items) != dims + 2:
            raise b.refuse(f"has {len(sizes.items)} sizes for a {dims + 2}-dimensional input")
        spatial = sizes.items[2:]
        out = [b.example(v) if isinstance(v, fx.Node) else v for v in spatial]
        factors = [o / n for o, n in zip(out, shape[2:])]
    else:
        raise b.refuse("has neither scales nor sizes")
    b.check_elements(shape[:2] + out)
    torch_mode, align = _resize_mode(b, attrs, dims, factors)
    if spatial is None:
        return [b.module(Resize(torch_mode, factors, align), b.tensor(x))]
    return [b.module(Resize(torch_mode, None, align), b.tensor(x), spatial)]


def _resize_mode(b: GraphBuilder, attrs: dict, dims: int, factors: list[float]) -> tuple[str, bool | None]:
    """torch's interpolation mode and align_corners for the Resize's mode and coordinate mapping."""
    mode = attrs.get("mode", "nearest")
    # opset 10's Resize maps coordinates as 'asymmetric' and rounds down
    transform = attrs.get("coordinate_transformation_mode", "half_pixel" if b.opset >= 11 else "asymmetric")
    if mode == "linear":
        if transform not in LINEAR:
            raise b.refuse(f"has linear mode with coordinate_transformation_mode {shown(transform)}")
        return {1: "linear", 2: "bilinear", 3: "trilinear"}[dims], LINEAR[transform]
    if mode != "nearest":
        raise b.refuse(f"has mode {shown(mode)}; nearest and linear are supported")
    rounding = attrs.get("nearest_mode", "round_prefer_floor" if b.opset >= 11 else "floor")
    if (transform, rounding) in NEAREST:
        return NEAREST[(transform, rounding)], None
    # Enlarging by whole factors, half_pixel never lands on a tie: every rounding is torch's 'nearest'.
    if transform in ("half_pixel", "pytorch_half_pixel") and all(f >= 1 and f == int(f) for f in factors):
        return "nearest", None
    raise b.refuse(f"has nearest mode with coordinate_transformation_mode {shown(transform)} and nearest_mode "
                   f"{shown(rounding)}; supported: asymmetric with floor (torch's 'nearest'), half_pixel with "
                   "round_prefer_ceil ('nearest-exact'), and any enlargement by whole factors")


SUPPORTED_OPS = tuple(sorted(CONVERTERS))
