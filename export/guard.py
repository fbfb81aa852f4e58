"""The input guard: a few standard ONNX ops in front of the text graph, for callers that are not our runtime.

Foreign clients pad to 77 (or any length), send `attention_mask`, and some (transformers.js) truncate after
adding the specials, so a long caption arrives without its `<eot>`. Unguarded, a sequence longer than the
context fails with a broadcast error and a missing `<eot>` makes pooling read the wrong position. The guard:

    ids = input_ids[:, :context]                       # cut to the context
    ids[:, -1] = eot  where a row has no <eot>         # CLIP's truncation: <sot> + context-2 tokens + <eot>
    ids = ids[:, :longest first <eot> + 1]             # the runtime's trimming: padding never reaches the
                                                       # model, so int8's per-batch activation ranges match
    attention_mask                                     # accepted and ignored: causal attention and
                                                       # pooling at <eot> never read the padding

For every input the runtime itself sends (exact length, `<eot>` present) the guard is the identity, so the
embeddings are unchanged. `attention_mask` is an input with a default (an ONNX initializer of the same
name), so callers may leave it out. Only the standard ONNX domain is used.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MASK_NAME = "attention_mask"
_PREFIX = "input_guard/"


def _const(name: str, values: list[int]) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), _PREFIX + name)


def add_input_guard(path: Path, context_length: int, eot_id: int, input_name: str = "input_ids") -> None:
    """Rewrite the ONNX file at `path` in place with the guard in front of `input_name`."""
    model = onnx.load(str(path))
    graph = model.graph
    original = next((i for i in graph.input if i.name == input_name), None)
    if original is None:
        raise ValueError(f"{path}: no graph input named {input_name!r}")
    guarded = _PREFIX + "ids"
    for node in graph.node:  # the original graph now reads the guarded ids
        node.input[:] = [guarded if name == input_name else name for name in node.input]
    p = _PREFIX
    big = np.iinfo(np.int64).max
    constants = [_const("zero", [0]), _const("context", [context_length]), _const("axis1", [1]),
                 _const("minus1", [-1]), _const("one", [1]), _const("big", [big]), _const("eot", [eot_id])]
    nodes = [
        helper.make_node("Slice", [input_name, p + "zero", p + "context", p + "axis1"], [p + "cut"]),
        helper.make_node("Equal", [p + "cut", p + "eot"], [p + "is_eot"]),
        helper.make_node("Cast", [p + "is_eot"], [p + "is_eot_int"], to=TensorProto.INT64),
        helper.make_node("ReduceMax", [p + "is_eot_int", p + "axis1"], [p + "has_eot"], keepdims=1),
        helper.make_node("Equal", [p + "has_eot", p + "zero"], [p + "missing"]),
        helper.make_node("Slice", [p + "cut", p + "minus1", p + "big", p + "axis1"], [p + "last"]),
        helper.make_node("Where", [p + "missing", p + "eot", p + "last"], [p + "new_last"]),
        helper.make_node("Slice", [p + "cut", p + "zero", p + "minus1", p + "axis1"], [p + "head"]),
        helper.make_node("Concat", [p + "head", p + "new_last"], [p + "fixed"], axis=1),
        helper.make_node("Equal", [p + "fixed", p + "eot"], [p + "fixed_is_eot"]),
        helper.make_node("Cast", [p + "fixed_is_eot"], [p + "fixed_is_eot_int"], to=TensorProto.INT32),
        helper.make_node("ArgMax", [p + "fixed_is_eot_int"], [p + "first_eot"], axis=1, keepdims=0),
        helper.make_node("ReduceMax", [p + "first_eot", p + "zero"], [p + "longest"], keepdims=1),
        helper.make_node("Add", [p + "longest", p + "one"], [p + "end"]),
        helper.make_node("Slice", [p + "fixed", p + "zero", p + "end", p + "axis1"], [guarded]),
    ]
    graph.initializer.extend(constants)
    # attention_mask: a graph input with a default, so it may be fed or left out; nothing reads it.
    mask_type = helper.make_tensor_value_info(MASK_NAME, TensorProto.INT64, ["batch", "sequence"])
    graph.input.append(mask_type)
    graph.initializer.append(numpy_helper.from_array(np.ones((1, 2), dtype=np.int64), MASK_NAME))
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*nodes, *old_nodes])
    onnx.save(model, str(path))


def graph_domains(path: Path) -> list[str]:
    """The operator domains a graph needs ("ai.onnx" for the standard one), for the manifest."""
    model = onnx.load(str(path), load_external_data=False)
    domains = {node.domain or "ai.onnx" for node in model.graph.node}
    return sorted(domains)
