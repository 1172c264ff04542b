"""model.onnx: an ONNX graph, read as data and converted to the exported program every method uses.

The file is parsed from its bytes (`onnx.load_model_from_string`), so nothing outside it is ever
read: a graph whose tensors are stored in other files (external data) is refused, since their
paths would be the user's to choose. It is held to the limits (limits.py: size, node count, the
size of every value it computes), to a single float32 (N, C, H, W) input with a dynamic batch
matching model.json, and to the ops onnx_ops.py converts; onnx.checker checks the rest. The
graph is converted node by node to torch modules, the groups of nodes torch.onnx writes for one
module made that module again (onnx_fusion.py), and exported with a dynamic batch dimension.

onnxruntime runs the original beside the converted program, and their logits must agree within
TOLERANCE: on a few random inputs when the model is loaded (an upload check refuses a model the
conversion gets wrong), and on probe images before an audit's first section (`OnnxOrigin.check`);
the report's model summary gives the largest difference.

This module imports onnx and onnxruntime only when a model is converted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import fx

from ..errors import BadInput
from ..limits import MAX_MODEL_BYTES, MAX_ONNX_NODES
from .meta import ModelMeta

TOLERANCE = 1e-4          # the largest difference between converted and onnxruntime logits accepted
MIN_OPSET = 9             # older opsets spell BatchNormalization, Upsample and pooling differently
RANDOM_INPUTS = 4         # compared at load
PROBE_IMAGES = 24         # compared before an audit
CHECK_BATCH = 8           # images per forward pass of a check (large inputs stay within memory)
ONNX_EXPORT_CALL = ("torch.onnx.export(model.eval(), (torch.randn(1, C, H, W),), 'model.onnx', dynamo=False, "
                    "input_names=['input'], dynamic_axes={'input': {0: 'batch'}})")


@dataclass
class OnnxOrigin:
    """Where a converted model came from, and how closely it matches onnxruntime."""
    source: str               # the file's name, for messages
    opset: int
    session: object           # onnxruntime.InferenceSession
    input_name: str
    difference: float = 0.0   # the largest absolute difference in logits found by the last check
    compared_on: str = ""     # "24 probe images"

    def check(self, program: torch.export.ExportedProgram, images: torch.Tensor, what: str) -> None:
        """Both run on `images`; BadInput when their logits differ by more than TOLERANCE."""
        module = program.module()
        difference = 0.0
        for batch in images.split(CHECK_BATCH):
            expected = self._reference_logits(batch)
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                converted = module(batch)
            converted = (converted[0] if isinstance(converted, (tuple, list)) else converted).float().numpy()
            if converted.shape != expected.shape:
                raise BadInput(f"{self.source}: the converted model gives logits of shape {list(converted.shape)}, "
                               f"onnxruntime {list(expected.shape)}")
            if converted.size:
                difference = max(difference, float(np.max(np.abs(converted - expected))))
        if not difference <= TOLERANCE:   # NaN fails too
            raise BadInput(f"{self.source}: the model converted from ONNX gives logits that differ from "
                           f"onnxruntime's by up to {difference:.2g} on {what} (at most {TOLERANCE:g} is accepted); "
                           "the conversion does not reproduce this model")
        self.difference, self.compared_on = difference, what

    def describe(self) -> str:
        return (f"converted from ONNX (opset {self.opset}); logits match onnxruntime within {self.difference:.2g} "
                f"on {self.compared_on}")

    def _reference_logits(self, batch: torch.Tensor) -> np.ndarray:
        try:
            outputs = self.session.run(None, {self.input_name: batch.detach().cpu().float().numpy()})
        except Exception as exc:
            raise BadInput(f"{self.source}: onnxruntime cannot run the model on {batch.shape[0]} inputs of the "
                           f"declared size ({_first_line(exc)})") from None
        return np.asarray(outputs[0], dtype=np.float32)


def load_onnx(path: Path, meta: ModelMeta) -> tuple[torch.export.ExportedProgram, OnnxOrigin]:
    """The exported program converted from model.onnx, checked against onnxruntime on random inputs."""
    source = path.name
    data = _read(path)
    model = _parse(data, source)
    opset = _check_structure(model, source)
    input_name = _check_signature(model, source, meta)
    _check_model(model, source)
    module = _convert(model, source, opset, input_name, meta)
    program = _export(module, meta, source)
    origin = OnnxOrigin(source, opset, _session(data, source), input_name)
    generator = torch.Generator().manual_seed(0)
    origin.check(program, torch.randn(RANDOM_INPUTS, *meta.input.size, generator=generator),
                 f"{RANDOM_INPUTS} random inputs")
    return program, origin


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise BadInput(f"{path.name} is larger than {MAX_MODEL_BYTES / 2**30:.3g} GiB, the most an audit accepts")
    return path.read_bytes()


def _parse(data: bytes, source: str):
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:   # protobuf raises DecodeError, and others on some corruptions
        raise BadInput(f"{source}: not a readable ONNX model ({_first_line(exc)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise BadInput(f"{source}: not an ONNX model (it holds no graph of nodes)")
    return model


def _check_structure(model, source: str) -> int:
    """The opset, after the checks that need no ONNX checker: limits, ops, where tensors are stored."""
    from .onnx_ops import CONVERTERS, SUPPORTED_OPS, shown

    opsets = {entry.domain: entry.version for entry in model.opset_import}
    opset = opsets.get("", opsets.get("ai.onnx"))
    if opset is None:
        raise BadInput(f"{source}: the model imports no standard ONNX operator set")
    if opset < MIN_OPSET:
        raise BadInput(f"{source}: the model uses ONNX opset {opset}; re-export it with opset {MIN_OPSET} or newer "
                       "(torch.onnx.export(..., opset_version=17))")
    graph = model.graph
    if len(graph.node) > MAX_ONNX_NODES:
        raise BadInput(f"{source}: the graph has {len(graph.node):,} nodes; at most {MAX_ONNX_NODES:,} are accepted")
    if model.functions:
        raise BadInput(f"{source}: the model defines its own ONNX functions ({shown(model.functions[0].name)}); "
                       "only standard ops are supported")
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type not in CONVERTERS:
            op = f"{node.domain}.{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            raise BadInput(f"{source}: the op {shown(op)} (node {shown(node.name or '?')}) is not supported; "
                           f"supported ops: {', '.join(SUPPORTED_OPS)}")
    for tensor, where in _stored_tensors(model):
        if tensor.data_location == 1 or len(tensor.external_data):   # TensorProto.EXTERNAL
            raise BadInput(f"{source}: {where} {shown(tensor.name)} is stored outside the file (external data); "
                           "save the model as one file: onnx.save_model(model, 'model.onnx', "
                           "save_as_external_data=False)")
    if len(graph.sparse_initializer):
        raise BadInput(f"{source}: the model has sparse initializers; store them as dense tensors")
    return opset


def _stored_tensors(model):
    for tensor in model.graph.initializer:
        yield tensor, "the initializer"
    for node in model.graph.node:
        for attribute in node.attribute:
            for tensor in ([attribute.t] if attribute.HasField("t") else []) + list(attribute.tensors):
                yield tensor, f"the constant of node {node.name or node.op_type!r}"


def _check_signature(model, source: str, meta: ModelMeta) -> str:
    """One float32 input of shape (batch, C, H, W) as model.json declares, one output; the input's name."""
    from onnx import TensorProto

    from .onnx_ops import shown

    graph = model.graph
    stored = {tensor.name for tensor in graph.initializer}
    inputs = [value for value in graph.input if value.name not in stored]
    if len(inputs) != 1:
        raise BadInput(f"{source}: the model takes {len(inputs)} inputs; an image classifier takes one")
    if len(graph.output) != 1:
        raise BadInput(f"{source}: the model has {len(graph.output)} outputs; expected one (the logits)")
    value = inputs[0]
    kind = value.type.WhichOneof("value")
    element = value.type.tensor_type.elem_type if kind == "tensor_type" else None
    if element != TensorProto.FLOAT:
        shown_type = TensorProto.DataType.Name(element).lower() if element else (kind or "untyped")
        raise BadInput(f"{source}: the model input {shown(value.name)} is {shown_type}; the audit feeds float32 images "
                       "(N, C, H, W)")
    if value.type.tensor_type.HasField("shape"):
        dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else None
                for d in value.type.tensor_type.shape.dim]
        if len(dims) != 4:
            raise BadInput(f"{source}: the model takes a {len(dims)}-dimensional input; an image classifier takes "
                           "(N, C, H, W)")
        if dims[0] is not None:
            raise BadInput(f"{source}: the model was exported with a fixed batch size of {dims[0]}; the audit runs "
                           f"batches of many sizes, so export it with a dynamic batch axis: {ONNX_EXPORT_CALL}")
        if any(given is not None and given != declared for given, declared in zip(dims[1:], meta.input.size)):
            exported = "x".join("?" if v is None else str(v) for v in dims[1:])
            raise BadInput(f"{source}: the model takes input {exported} but model.json declares "
                           f"{'x'.join(map(str, meta.input.size))}")
    return value.name


def _check_model(model, source: str) -> None:
    import onnx

    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise BadInput(f"{source}: not a valid ONNX model ({_first_line(exc)})") from None


def _convert(model, source: str, opset: int, input_name: str, meta: ModelMeta) -> fx.GraphModule:
    """The graph as an fx.GraphModule of torch modules, one per ONNX node that computes on tensors."""
    from .onnx_fusion import collapse, fuse
    from .onnx_ops import EXAMPLE_BATCH, GraphBuilder, module_paths

    nodes = list(model.graph.node)
    example = torch.randn(EXAMPLE_BATCH, *meta.input.size, generator=torch.Generator().manual_seed(0))
    plan = module_paths(nodes)
    builder = GraphBuilder(source, opset, example, plan)
    values: dict[str, object] = {tensor.name: _tensor(tensor, source) for tensor in model.graph.initializer}
    values[input_name] = builder.input
    for node, path, repeat in zip(nodes, plan.paths, plan.repeats):
        builder.node, builder.path, builder.repeat = node, path, repeat
        outputs = _converted_node(builder, node, [_node_input(builder, values, name) for name in node.input])
        for name, value in zip(node.output, list(outputs) + [None] * len(node.output)):
            if name:
                values[name] = value if value is not None else _Unavailable(node.name or node.op_type)
    result = values.get(model.graph.output[0].name)
    if not isinstance(result, fx.Node) or not isinstance(builder.examples[result], torch.Tensor):
        raise BadInput(f"{source}: the model's output does not depend on its input")
    builder.graph.output(result)
    module = fx.GraphModule(builder.root, builder.graph)
    fuse(module, builder.examples)
    module = _pruned(module)
    collapse(module, plan.grouped)
    return module


@dataclass(frozen=True)
class _Unavailable:
    """An output the converter does not give (MaxPool's indices, Dropout's mask): the node that has it."""
    node: str


def _node_input(builder, values: dict, name: str):
    from .onnx_ops import shown

    if not name:
        return None   # an optional input left out
    value = values.get(name)
    if isinstance(value, _Unavailable):
        raise builder.refuse(f"uses the second output of node {shown(value.node)} (indices or a dropout mask), "
                             "which is not supported")
    if value is None:
        raise builder.refuse(f"uses {shown(name)}, which no earlier node computes")
    return value


def _converted_node(builder, node, inputs: list) -> list:
    from .onnx_ops import CONVERTERS

    try:
        return CONVERTERS[node.op_type](builder, _attributes(node, builder.source), inputs)
    except BadInput:
        raise
    except Exception as exc:   # attributes or inputs of a kind the checker lets through
        raise builder.refuse(f"cannot be converted ({_first_line(exc)})") from None


def _pruned(module: fx.GraphModule) -> fx.GraphModule:
    """Without the nodes the output does not need, nor their modules and constants."""
    module.graph.eliminate_dead_code()
    module.delete_all_unused_submodules()
    used = {n.target for n in module.graph.nodes if n.op == "get_attr"}
    for name in [n for n in module._buffers if n not in used]:
        delattr(module, name)
    module.recompile()
    return module.eval()


def _tensor(proto, source: str) -> torch.Tensor:
    from onnx import numpy_helper

    from .onnx_ops import shown

    try:
        array = numpy_helper.to_array(proto)
    except Exception as exc:
        raise BadInput(f"{source}: the tensor {shown(proto.name)} cannot be read ({_first_line(exc)})") from None
    if array.dtype.kind not in "fiub":
        raise BadInput(f"{source}: the tensor {shown(proto.name)} holds {array.dtype} values; only numbers are "
                       "supported")
    if array.dtype.kind == "f" and array.dtype != np.float64:
        array = array.astype(np.float32)
    if array.dtype.kind == "u" or array.dtype == np.bool_:
        array = array.astype(np.int64)
    return torch.from_numpy(np.array(array, copy=True))


def _attributes(node, source: str) -> dict:
    from onnx import AttributeProto, helper

    from .onnx_ops import shown

    attributes = {}
    for attribute in node.attribute:
        if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS, AttributeProto.SPARSE_TENSOR,
                              AttributeProto.SPARSE_TENSORS, AttributeProto.TYPE_PROTO, AttributeProto.TYPE_PROTOS):
            raise BadInput(f"{source}: node {shown(node.name or node.op_type)} has an attribute "
                           f"{shown(attribute.name)} of a kind that is not supported")
        if attribute.type == AttributeProto.TENSOR:
            attributes[attribute.name] = _tensor(attribute.t, source)
            continue
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        attributes[attribute.name] = value
    return attributes


def _export(module: fx.GraphModule, meta: ModelMeta, source: str) -> torch.export.ExportedProgram:
    example = torch.randn(2, *meta.input.size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as exc:
        raise BadInput(f"{source}: the graph converted from ONNX cannot run on batches of any size "
                       f"({_first_line(exc)}); a Reshape to a fixed batch size does this: {ONNX_EXPORT_CALL}") from None
    _record_containers(program)
    return program


def _record_containers(program: torch.export.ExportedProgram) -> None:
    """torch.export records the modules each op runs in; the converted graph calls every module by its path,
    so only the innermost is recorded. The modules on that path (`layer1`, `layer1.0`: the blocks of the
    original model) are added, so that they are layers too, each giving its last op's output."""
    for node in program.graph.nodes:
        stack = node.meta.get("nn_module_stack")
        if not stack:
            continue
        recorded = {}
        for key, (path, kind) in stack.items():
            parts = path.split(".") if path else []
            for depth in range(1, len(parts)):
                container = ".".join(parts[:depth])
                recorded.setdefault(f"L__self__{container}", (container, "torch.nn.Module"))
            recorded[key] = (path, kind)
        node.meta["nn_module_stack"] = recorded


def _session(data: bytes, source: str):
    """onnxruntime on the CPU, with as many threads as torch uses and none spinning while idle."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise BadInput(f"{source}: onnxruntime cannot load the model ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
