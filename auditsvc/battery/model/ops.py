"""Which operators a model graph may call: the pure tensor ops a classifier uses.

A model file is code. Its graph is run by torch's own interpreter, but some tensor ops reach
past the tensors: `aten::from_file` opens (and with shared=True creates or changes) a file,
`aten::save` writes one, `aten::manual_seed` changes the process's random state, forks and
waits start work of their own, and ops outside the `aten`/`prim` namespaces (distributed,
profiler, custom libraries) can do anything. Graphs holding any of those are refused, naming
the op, before the model runs: the first line of defence in front of the sandbox.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable

import torch

from ..errors import BadInput

ALLOWED_NAMESPACES = {"aten", "prim"}
DENIED_OPS = {
    "from_file", "save", "load",                                   # files
    "set_", "set_data", "_cufft_set_plan_cache_max_size", "record_stream",  # storage and device state
    "manual_seed", "seed", "initial_seed",                         # the process's random state
    "fork", "wait", "awaitable", "awaitable_wait", "awaitable_nowait",  # work outside the graph
    "PythonOp", "CallFunction", "CreateObject", "Enter", "Exit",    # TorchScript escapes to Python or objects
}
PYTHON_HELPERS = {operator, math}  # getitem, arithmetic on sizes


def refuse_unsafe_ops(program: torch.export.ExportedProgram, source: str) -> None:
    """Every call in an exported program's graph (and its nested graphs) must be an allowed op."""
    for module in program.graph_module.modules():
        if isinstance(module, torch.fx.GraphModule):
            for node in module.graph.nodes:
                if node.op == "call_function":
                    _check_target(node.target, source)
                elif node.op in ("call_module", "call_method"):
                    raise BadInput(f"{source}: the graph calls {node.op} {str(node.target)[:80]!r}; only tensor "
                                   "ops are accepted")


def refuse_unsafe_script_ops(scripted: torch.jit.ScriptModule, source: str) -> None:
    """The same rule for a TorchScript module, on every method's inlined graph, before conversion."""
    for graph in _script_graphs(scripted):
        for kind in _node_kinds(graph.nodes()):
            namespace, _, name = kind.partition("::")
            _check_name(namespace, name, kind, source)


def _check_target(target, source: str) -> None:
    if isinstance(target, (torch._ops.OpOverload, torch._ops.OpOverloadPacket)):
        name = target._schema.name if isinstance(target, torch._ops.OpOverload) else target._qualified_op_name
        namespace, _, op = name.partition("::")
        _check_name(namespace, op, name, source)
        return
    if isinstance(target, torch._ops.HigherOrderOperator):
        raise BadInput(f"{source}: the graph uses the control-flow operator {target.name()!r}; only plain tensor "
                       "ops are accepted")
    module = getattr(target, "__module__", "") or ""
    if any(module == helper.__name__ or module == "_" + helper.__name__ for helper in PYTHON_HELPERS):
        return
    if module.startswith("torch") and getattr(target, "__name__", "").startswith("sym_"):
        return
    raise BadInput(f"{source}: the graph calls {getattr(target, '__qualname__', repr(target))[:80]!r}, which is not "
                   "a tensor op; refused")


def _check_name(namespace: str, op: str, shown: str, source: str) -> None:
    if namespace not in ALLOWED_NAMESPACES:
        raise BadInput(f"{source}: the graph uses the op {shown!r} from outside torch's tensor ops (aten); "
                       "custom, quantized, distributed and profiler ops are refused")
    if op in DENIED_OPS or op.rstrip("_") in DENIED_OPS:
        raise BadInput(f"{source}: the graph uses the op {shown!r}, which reaches files, storage, random state or "
                       "other processes; a classifier needs none of them, so the model is refused")


def _script_graphs(scripted: torch.jit.ScriptModule) -> Iterable:
    for module in scripted.modules():
        for name in module._c._method_names():
            method = module._c._get_method(name)
            graph = method.graph.copy()
            torch._C._jit_pass_inline(graph)
            yield graph


def _node_kinds(nodes) -> Iterable[str]:
    for node in nodes:
        yield node.kind()
        for block in node.blocks():
            yield from _node_kinds(block.nodes())
