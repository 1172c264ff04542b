"""Access to the inside of any exported CNN: its layers, their activations, guided ReLUs.

`ModelGraph` wraps the functional (no in-place ops) graph of an ExportedProgram as a plain
`torch.fx.GraphModule` that takes a batch and returns logits. Layers are named by module
path from the export (`layer1.0.conv1`); a functional op that runs directly inside a
container module is a layer of its own, named `<container>:<node>` (`layer1.0:relu_3`), and so
is the op that returns the logits when no module owns it (SqueezeNet's final flatten). A map the
graph holds channels-last (ConvNeXt's LayerNorm and Linear layers between two permutes) is a
layer with channels-first shape and activations, like every other map (see layout.py).

Internals are reached by rewriting a copy of the graph, never by hoping for `nn.ReLU`
modules: `GraphRewrite` adds extra outputs (activations), swaps every ReLU node for a
guided-backprop or deconvnet ReLU (functional and in-place ReLUs included), or routes a
layer through an identity `Tap` module for Captum's layer methods. The rewrite and the
hooks on it live only inside its `with` block. Whole-model passes run on `fast`, a copy
with BatchNorm folded into convolutions and channels-last weights (see fast.py).
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import fx, nn

from .fast import CONV, RELU_REPLACEMENTS, ChannelsLast, fold_batch_norm, get_attr
from .layout import Axes, channels_first, inverse, spatial_axes

RELU_OPS = {torch.ops.aten.relu.default, torch.ops.aten.relu_.default}
# Functional ops worth naming as layers when they run directly inside a container module.
FUNCTIONAL_LAYER_OPS = {
    "relu", "relu_", "silu", "silu_", "gelu", "hardswish", "hardswish_", "hardsigmoid", "sigmoid",
    "tanh", "leaky_relu", "elu", "hardtanh", "hardtanh_", "mish", "add", "add_", "mul", "cat",
    "max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d", "mean",
}
aten = torch.ops.aten
# Ops that apply a layer's weights to a representation: where a classifier head reads its input.
HEAD_OPS = CONV | {aten.linear.default, aten.addmm.default, aten.mm.default, aten.matmul.default}
# Ops between a representation and the head that reads it that change neither its values nor their order.
PASS_THROUGH_OPS = {aten.view.default, aten.reshape.default, aten._unsafe_view.default, aten.flatten.using_ints,
                    aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.unsqueeze.default,
                    aten.clone.default, aten.alias.default, aten.contiguous.default, aten.detach.default,
                    aten.dropout.default, aten._to_copy.default}
WEIGHT_OP_TYPES = {"conv2d": "Conv2d", "convolution": "Conv2d", "linear": "Linear",
                   "_native_batch_norm_legit_no_training": "BatchNorm2d", "batch_norm": "BatchNorm2d"}


@dataclass(frozen=True)
class Layer:
    name: str           # module path, or "<container>:<node>" for a functional op
    type: str           # module class name ("Conv2d") or "fn:<op>" for a functional op
    node: str           # the fx node whose output is the layer's output
    shape: tuple[int, ...]  # output shape without the batch dimension
    parameters: int     # parameters and weights owned by this module path (0 for functional ops)
    leaf: bool          # a module without child modules, or a functional op
    # For a map the graph holds channels-last (ConvNeXt's LayerNorm and Linear layers): the permutation
    # that makes the node's output channels-first. Shapes, activations and taps are channels-first.
    permute: tuple[int, ...] | None = None

    @property
    def is_spatial(self) -> bool:
        return len(self.shape) == 3

    @property
    def is_conv(self) -> bool:
        return self.type.startswith("Conv")


class Tap(nn.Identity):
    """An identity module a layer's output flows through, for Captum's layer methods."""


class ModelGraph:
    def __init__(self, program: torch.export.ExportedProgram, input_size: Sequence[int],
                 device: str | torch.device = "cpu", module_types: dict[str, str] | None = None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = program.run_decompositions({})  # functionalize: relu_ -> relu, no mutation
            unlifted = program.module()
        self.device = torch.device(device)
        self.module = _flat_module(unlifted).to(self.device)
        for tensor in [*self.module.parameters(), *self.module.buffers()]:
            tensor.requires_grad_(False)
        self.fast, self._fast_names = fold_batch_norm(self.module)
        self.input_size = tuple(input_size)
        self.layers: list[Layer] = []
        self._by_name: dict[str, Layer] = {}
        self._set_layers(_catalog(self.module, module_types or {}, spatial_axes(self.module)))
        self.relu_count = sum(1 for n in self.module.graph.nodes if n.target in RELU_OPS)

    def _set_layers(self, layers: list[Layer]) -> None:
        """Record the layers with their real output shapes, from one forward pass."""
        self.layers, self._by_name = layers, {layer.name: layer for layer in layers}
        probe = torch.zeros(1, *self.input_size, device=self.device)
        with torch.inference_mode():
            _, outputs = self.activations(probe, [layer.name for layer in layers])
        self.layers = [replace(l, shape=tuple(outputs[l.name].shape[1:])) for l in layers]
        self._by_name = {layer.name: layer for layer in self.layers}

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits from the fast graph."""
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return self.fast(batch)

    def layer(self, name: str) -> Layer:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r}; layers: {', '.join(self._by_name)}") from None

    def leaf_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.leaf]

    def conv_layers(self) -> list[Layer]:
        return [layer for layer in self.layers if layer.is_conv and layer.is_spatial]

    def last_spatial_layer(self) -> Layer:
        """The deepest layer that still has a spatial map (> 1x1): Grad-CAM's usual choice."""
        spatial = [l for l in self.layers if l.is_spatial and l.shape[1] * l.shape[2] > 1]
        if not spatial:
            raise ValueError("the model has no layer with a spatial output")
        leaf = [l for l in spatial if l.leaf]
        return (leaf or spatial)[-1]

    def output_layer(self) -> Layer:
        """The layer that produces the logits (for a head that ends in a flatten, a view or a pool
        outside any module, the catalog lists that op as a layer of its own)."""
        output = _output_node(self.module)
        found = [l for l in self.layers if l.node == output.name]
        if not found:
            raise ValueError(f"no layer produces the model's output {output.name!r}")
        return found[-1]

    def penultimate_layer(self) -> Layer:
        """The representation the classifier head reads: the input of the last weighted op (linear or
        convolution) before the logits, through reshapes and dropout: the pooled features a linear
        head reads, or the map an all-convolutional head (SqueezeNet) turns into class scores. Without
        such an op, the last layer before the output."""
        output = self.output_layer()
        order = {layer.name: index for index, layer in enumerate(self.layers)}
        source = _head_input(self.module)
        if source is not None and source.name != output.node:
            readers = [l for l in self.layers if l.node == source.name and order[l.name] < order[output.name]]
            if readers:
                return ([l for l in readers if l.leaf] or readers)[0]
        before = [l for l in self.layers if l.leaf and l.node != output.node and order[l.name] < order[output.name]]
        if not before:
            raise ValueError("the model has no layer before its output")
        return before[-1]

    def activations(self, batch: torch.Tensor, names: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the outputs of the named layers, all from one forward pass."""
        with GraphRewrite(self, outputs=names, fast=False) as rewrite:
            logits, *outputs = rewrite.module(batch)
        return logits, dict(zip(names, outputs))

    def rewrite(self, *, outputs: Sequence[str] = (), relu: str | None = None, taps: Sequence[str] = (),
                fast: bool = True, truncate: bool = False) -> "GraphRewrite":
        return GraphRewrite(self, outputs=outputs, relu=relu, taps=taps, fast=fast, truncate=truncate)

    def fast_node(self, layer: str) -> str | None:
        """The node carrying this layer's output in the fast graph, if folding kept it."""
        return self._fast_names.get(self.layer(layer).node)

    def layer_weight(self, layer: Layer) -> torch.Tensor | None:
        """The weight tensor a conv or linear layer applies (argument 1 of its op), if any."""
        node = next(n for n in self.module.graph.nodes if n.name == layer.node)
        if len(node.args) > 1 and isinstance(node.args[1], fx.Node) and node.args[1].op == "get_attr":
            return get_attr(self.module, node.args[1].target)
        return None

    def weights(self) -> dict[str, torch.Tensor]:
        return dict(self.module.named_parameters()) | dict(self.module.named_buffers())


class GraphRewrite:
    """A rewritten copy of the model graph, valid inside its `with` block.

    outputs: the module returns (logits, *those layers' outputs) instead of logits.
    relu: "guided" or "deconv" replaces every ReLU by that method's ReLU.
    taps: those layers' outputs flow through identity `Tap` submodules (`.taps[name]`).
    fast: start from the fast graph (falls back to the full one when a layer was folded away).
    truncate: the module returns only the `outputs` layers' outputs (a tuple, no logits) and computes
    nothing they do not depend on: an early layer's activations cost only the layers up to it.
    Hooks registered on its modules through `hook()` are removed on exit.
    """

    def __init__(self, graph: ModelGraph, *, outputs: Sequence[str] = (), relu: str | None = None,
                 taps: Sequence[str] = (), fast: bool = True, truncate: bool = False):
        if relu not in (None, *RELU_REPLACEMENTS):
            raise ValueError(f"unknown ReLU rewrite {relu!r}")
        if truncate and not outputs:
            raise ValueError("a truncated rewrite needs the layers whose outputs it returns")
        self._truncate = truncate
        self.graph = graph
        self._outputs, self._relu, self._taps = list(outputs), relu, list(taps)
        wanted = [graph.fast_node(name) for name in [*self._outputs, *self._taps]]
        self._fast = fast and all(wanted)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.module: nn.Module | None = None
        self.taps: dict[str, Tap] = {}

    def _node_name(self, layer: str) -> str:
        return self.graph.fast_node(layer) if self._fast else self.graph.layer(layer).node

    def __enter__(self) -> "GraphRewrite":
        base = self.graph.fast if self._fast else self.graph.module
        new_graph = copy.deepcopy(base.graph)
        nodes = {node.name: node for node in new_graph.nodes}
        submodules: dict[str, nn.Module] = {}
        if self._relu:
            for node in [n for n in new_graph.nodes if n.target in RELU_OPS]:
                node.target = RELU_REPLACEMENTS[self._relu]
                node.args, node.kwargs = node.args[:1], {}
        for index, name in enumerate(self._taps):
            self.taps[name] = submodules[f"auditsvc_tap_{index}"] = Tap()
            node_name = self._node_name(name)
            nodes[node_name] = _insert_after(new_graph, nodes[node_name], f"auditsvc_tap_{index}",
                                             self.graph.layer(name).permute)
        if self._outputs:
            output_node = next(n for n in new_graph.nodes if n.op == "output")
            extra = [_channels_first(new_graph, nodes[self._node_name(name)], self.graph.layer(name).permute)
                     for name in self._outputs]
            output_node.args = (tuple(extra),) if self._truncate else ((output_node.args[0], *extra),)
            if self._truncate:
                new_graph.eliminate_dead_code()
        new_graph.lint()
        module = fx.GraphModule(_graph_root(base, new_graph, submodules), new_graph)
        self.module = ChannelsLast(module) if self._fast else module
        return self

    def hook(self, module: nn.Module, kind: str, fn) -> None:
        register = {"forward": module.register_forward_hook,
                    "full_backward": module.register_full_backward_hook}[kind]
        self._handles.append(register(fn))

    def __exit__(self, *exc_info) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.module, self.taps = None, {}


def _flat_module(unlifted: fx.GraphModule) -> fx.GraphModule:
    """The unlifted module with plain calling conventions: f(batch) -> logits tensor."""
    graph = copy.deepcopy(unlifted.graph)
    graph._codegen = fx.graph.CodeGen()
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn":
            graph.erase_node(node)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ValueError(f"the model takes {len(placeholders)} inputs; an image classifier takes exactly one")
    output_node = next(n for n in graph.nodes if n.op == "output")
    result = output_node.args[0]
    while isinstance(result, (tuple, list)):
        if len(result) != 1:
            raise ValueError(f"the model returns {len(result)} outputs; expected one logits tensor")
        result = result[0]
    output_node.args = (result,)
    graph.eliminate_dead_code()
    graph.lint()
    return fx.GraphModule(unlifted, graph)


def _insert_after(graph: fx.Graph, node: fx.Node, target: str, permute: tuple[int, ...] | None = None) -> fx.Node:
    """Route the node's output through the module `target`; a channels-last map passes it channels-first
    (permuted there and back), so a tap always sees (N, C, H, W). Returns the node now standing for `node`."""
    source = _channels_first(graph, node, permute)
    with graph.inserting_after(source):
        tap = graph.call_module(target, (source,))
    result = tap
    if permute is not None:
        with graph.inserting_after(tap):
            result = graph.call_function(aten.permute.default, (tap, list(inverse(permute))))
    result.meta = dict(node.meta)
    node.replace_all_uses_with(result, delete_user_cb=lambda user: user is not source and user is not tap)
    return result


def _channels_first(graph: fx.Graph, node: fx.Node, permute: tuple[int, ...] | None) -> fx.Node:
    """The node's output, channels-first: the node itself, or a permute of it added after it."""
    if permute is None:
        return node
    with graph.inserting_after(node):
        return graph.call_function(aten.permute.default, (node, list(permute)))


def _output_node(module: fx.GraphModule) -> fx.Node:
    return next(n for n in module.graph.nodes if n.op == "output").args[0]


def _head_input(module: fx.GraphModule) -> fx.Node | None:
    """What the classifier head reads: the input of the weighted op nearest the output (breadth-first
    from the output), traced back through reshapes and dropout."""
    queue, seen = [_output_node(module)], set()
    while queue:
        node = queue.pop(0)
        if node in seen or node.op == "placeholder":
            continue
        seen.add(node)
        if node.target in HEAD_OPS and len(node.args) > 1:
            source = node.args[1] if node.target is aten.addmm.default else node.args[0]
            while (isinstance(source, fx.Node) and source.target in PASS_THROUGH_OPS and source.args
                   and isinstance(source.args[0], fx.Node)):
                source = source.args[0]
            return source if isinstance(source, fx.Node) else None
        queue.extend(node.all_input_nodes)
    return None


def _graph_root(base: fx.GraphModule, graph: fx.Graph, submodules: dict[str, nn.Module]) -> dict:
    """What the new graph's get_attr and call_module nodes refer to: shared, not copied."""
    root: dict[str, object] = dict(submodules)
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module") and node.target not in root:
            root[node.target] = get_attr(base, node.target)
    return root


def _tensor_meta(node: fx.Node) -> torch.Tensor | None:
    value = node.meta.get("val")
    return value if isinstance(value, torch.Tensor) and value.is_floating_point() else None


def _module_stack(node: fx.Node, module_types: dict[str, str]) -> list[tuple[str, str]]:
    """(path, type) from outermost to innermost module, root excluded."""
    if node.target is operator.getitem and isinstance(node.args[0], fx.Node):
        node = node.args[0]  # the tuple-returning op (batch norm) the item comes from
    stack = node.meta.get("nn_module_stack") or {}
    entries = [(path, type_name.rsplit(".", 1)[-1]) for path, type_name in stack.values() if path]
    if entries:
        return entries
    # TorchScript conversions keep no module stack: the weights a node reads name its module.
    for arg in node.args:
        if isinstance(arg, fx.Node) and arg.op == "get_attr" and "." in arg.target:
            path = arg.target.rsplit(".", 1)[0]
            op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
            type_name = module_types.get(path) or WEIGHT_OP_TYPES.get(op, "Module")
            parts = path.split(".")
            return [(".".join(parts[: i + 1]), module_types.get(".".join(parts[: i + 1]), "Module"))
                    for i in range(len(parts) - 1)] + [(path, type_name)]
    return []


def _catalog(module: fx.GraphModule, module_types: dict[str, str], axes: dict[str, Axes]) -> list[Layer]:
    nodes_by_name = {node.name: node for node in module.graph.nodes}
    last_node: dict[str, fx.Node] = {}
    types: dict[str, str] = {}
    functional: list[tuple[str, fx.Node, str]] = []  # (owner path, node, op)
    order = {node: index for index, node in enumerate(module.graph.nodes)}
    for node in module.graph.nodes:
        if node.op not in ("call_function", "call_module") or _tensor_meta(node) is None:
            continue
        stack = _module_stack(node, module_types)
        for path, type_name in stack:
            last_node[path] = node
            types[path] = type_name
        op = getattr(node.target, "__name__", str(node.target)).split(".")[0]
        if op in FUNCTIONAL_LAYER_OPS and _tensor_meta(node).dim() in (2, 4):
            functional.append((stack[-1][0] if stack else "", node, op))
    paths = set(last_node)
    containers = {p for p in paths if any(q.startswith(p + ".") for q in paths)}
    leaves = paths - containers
    param_counts = _parameter_counts(module)
    layers = [
        Layer(path, types[path], last_node[path].name, (),
              sum(n for name, n in param_counts.items() if name.startswith(path + ".")), path in leaves)
        for path in paths
    ]
    for owner, node, op in functional:
        if owner in leaves:
            continue  # e.g. the relu inside nn.ReLU: the module is the layer
        name = f"{owner}:{node.name}" if owner else node.name
        layers.append(Layer(name, f"fn:{op.rstrip('_')}", node.name, (), 0, True))
    output = _output_node(module)
    if isinstance(output, fx.Node) and not any(l.node == output.name for l in layers):
        # The logits come from an op no module owns and that is not listed above: SqueezeNet's
        # torch.flatten after its pooled convolutional head. It is the output layer.
        stack = _module_stack(output, module_types)
        op = getattr(output.target, "__name__", str(output.target)).split(".")[0]
        name = f"{stack[-1][0]}:{output.name}" if stack else output.name
        layers.append(Layer(name, f"fn:{op.rstrip('_')}", output.name, (), 0, True))
    layers = [replace(l, permute=channels_first(nodes_by_name[l.node], axes)) for l in layers]
    nodes = {node.name: node for node in module.graph.nodes}
    # Order by where the output appears; a container sorts after the children it ends with.
    layers.sort(key=lambda l: (order[nodes[l.node]], not l.leaf, -l.name.count(".")))
    return layers


def _parameter_counts(module: nn.Module) -> dict[str, int]:
    return {name: t.numel() for name, t in [*module.named_parameters(), *module.named_buffers()]
            if not name.endswith(("running_mean", "running_var", "num_batches_tracked"))}

