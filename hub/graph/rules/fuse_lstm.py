"""Keep a plain ONNX LSTM whole, for TFLM's fused UNIDIRECTIONAL_SEQUENCE_LSTM kernel.

Pattern: an LSTM node whose cell the fused kernel computes (hub.knowledge.sequence_lstm): default
activations, no clip, no input_forget, no peepholes (or all-zero ones), every sequence at the full
static length, zero initial states, and its final cell state Y_c read by nobody.
Replacement: the same node in its canonical form, the inputs that say "nothing" (zero initial
states, zero peepholes, full-length sequence_lens) removed, and a read final hidden state Y_h taken
from the sequence output Y instead (the fused op's only output). In the converter child, onnx2tf lowers
it and hub.convert.lstm builds it as a Keras LSTM, which TensorFlow's converter fuses: one op per
direction (a bidirectional node: two, joined by REVERSE_V2 and CONCATENATION), int8 with TFLM's
integer cell, instead of hundreds of unrolled ones (the 49-step, 64-unit KWS LSTM: 733 ops and
182 KB of arena unrolled). Every other LSTM, and every LSTM in int16x8 (MODES), is left to
hub.graph.rules.unroll_rnn, which skips the nodes marked `kept`. Exact: the node computes what it computed.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hub.artifacts import Rewrite
from hub.graph.edit import attr, constant, consumers, graph_output_names, static_shape
from hub.knowledge.sequence_lstm import CONVERTER_MODES

UNBLOCKS = ("LSTM",)
DOES = "runs it as TFLM's fused UNIDIRECTIONAL_SEQUENCE_LSTM (unrolled instead when the cell has peepholes, " \
       "clip or a used final cell state)"

INTO = "fused UNIDIRECTIONAL_SEQUENCE_LSTM"  # Rewrite.into: the path the report names
MODES = CONVERTER_MODES  # int16x8: TF's converter cannot quantize the fused op; unroll_rnn takes those LSTMs
MARK = "hub: kept whole for TFLM's fused LSTM kernel"  # the node's doc_string: unroll_rnn leaves marked nodes
DEFAULT_ACTIVATIONS = ["Sigmoid", "Tanh", "Tanh"]
X, W, R, B, SEQUENCE_LENS, INITIAL_H, INITIAL_C, P = range(8)  # ONNX LSTM input positions
Y, Y_H, Y_C = range(3)  # ONNX LSTM output positions


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "LSTM"]:
        if fusable(model, node):
            _drop_empty_inputs(model, node)
            node.doc_string = MARK
            if _read(model, node, Y_H):
                _final_state_from_sequence(model, node)
            rewrites.append(Rewrite(node=node.name, op="LSTM", into=INTO, path="fused"))
    return model, rewrites


def kept(node: onnx.NodeProto) -> bool:
    """Whether this rule kept the node whole (this run of the rules, in this quantize mode)."""
    return node.doc_string == MARK


def fusable(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """Whether the fused kernel computes this LSTM node exactly as ONNX defines it."""
    ins = list(node.input) + [""] * 8
    shape = static_shape(model, ins[X])
    weights = [constant(model, ins[W]), constant(model, ins[R])]
    if shape is None or len(shape) != 3 or any(w is None or w.dtype != np.float32 for w in weights):
        return False
    if ins[B] and constant(model, ins[B]) is None:
        return False
    directions = 2 if _text(attr(node, "direction", b"forward")) == "bidirectional" else 1
    activations = [_text(a) for a in attr(node, "activations", [])]
    if activations and activations != DEFAULT_ACTIVATIONS * directions:
        return False
    if attr(node, "clip") is not None or attr(node, "input_forget", 0):
        return False
    seq = shape[0] if int(attr(node, "layout", 0)) == 0 else shape[1]
    return (_says_nothing(model, ins[SEQUENCE_LENS], seq) and all(_says_nothing(model, ins[i]) for i in (INITIAL_H,
            INITIAL_C, P)) and not _read(model, node, Y_C))


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _says_nothing(model: onnx.ModelProto, name: str, full_length: int | None = None) -> bool:
    """Absent, or a constant that changes nothing: zeros (states, peepholes), or every length the full one."""
    if not name:
        return True
    value = constant(model, name)
    if value is None:
        return False
    return bool(np.all(value == full_length)) if full_length is not None else not np.any(value)


def _read(model: onnx.ModelProto, node: onnx.NodeProto, index: int) -> bool:
    name = node.output[index] if len(node.output) > index else ""
    return bool(name) and (name in graph_output_names(model) or bool(consumers(model, name)))


def _drop_empty_inputs(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Blank the inputs that say nothing (onnx2tf then builds the Keras layer's zero state) and trim the tail.
    A bidirectional node keeps a zero initial_h: onnx2tf 1.29's lowering indexes it for the reverse direction
    whether or not it is given (onnx2tf/ops/LSTM.py, `initial_h[1]`)."""
    ins = list(node.input)[:SEQUENCE_LENS] + [""] * (INITIAL_H - SEQUENCE_LENS + 1)
    if _text(attr(node, "direction", b"forward")) == "bidirectional":
        shape = static_shape(model, node.input[X])
        batch = shape[1] if int(attr(node, "layout", 0)) == 0 else shape[0]
        hidden = int(attr(node, "hidden_size"))
        zeros = np.zeros((2, batch, hidden) if int(attr(node, "layout", 0)) == 0 else (batch, 2, hidden), np.float32)
        ins[INITIAL_H] = _fresh_name(model, f"{node.name or node.output[0]}_zero_h")
        model.graph.initializer.append(numpy_helper.from_array(zeros, ins[INITIAL_H]))
    while ins and not ins[-1]:
        ins.pop()
    del node.input[:]
    node.input.extend(ins)


def _fresh_name(model: onnx.ModelProto, base: str) -> str:
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _final_state_from_sequence(model: onnx.ModelProto, node: onnx.NodeProto) -> None:
    """Y_h read as the last step of each direction in Y (the forward one's last, the reverse one's first): the
    fused op has one output, the sequence, and a Keras LSTM whose state output is read crashes TensorFlow's
    converter (SIGSEGV, measured). Exact: the final hidden state is that step of Y."""
    shape = static_shape(model, node.input[X])
    layout = int(attr(node, "layout", 0))
    seq, batch = (shape[0], shape[1]) if layout == 0 else (shape[1], shape[0])
    hidden = int(attr(node, "hidden_size"))
    directions = 2 if _text(attr(node, "direction", b"forward")) == "bidirectional" else 1
    reverse = _text(attr(node, "direction", b"forward")) == "reverse"
    outputs = list(node.output) + [""] * 3
    y_h = outputs[Y_H]
    y = outputs[Y] or _fresh_name(model, f"{node.name or y_h}_Y")
    outputs[Y], outputs[Y_H] = y, ""
    while outputs and not outputs[-1]:
        outputs.pop()
    del node.output[:]
    node.output.extend(outputs)
    new, time_axis, state_axis = [], (0 if layout == 0 else 1), (0 if layout == 0 else 1)
    const = _constants(model, node.name or y_h)
    parts = []
    for d in range(directions):
        step = 0 if reverse or d == 1 else seq - 1
        part = _fresh_name(model, f"{y_h}_d{d}")
        new.append(helper.make_node("Slice", [y, const([step, d]), const([step + 1, d + 1]),
                                              const([time_axis, time_axis + 1])], [part + "_4d"], name=part + "/Slice"))
        state_shape = [1, batch, hidden] if layout == 0 else [batch, 1, hidden]
        new.append(helper.make_node("Reshape", [part + "_4d", const(state_shape)], [part if directions > 1 else y_h],
                                    name=part + "/Reshape"))
        parts.append(part)
    if directions > 1:
        new.append(helper.make_node("Concat", parts, [y_h], name=f"{y_h}/Concat", axis=state_axis))
    at = list(model.graph.node).index(node) + 1
    for offset, made in enumerate(new):
        model.graph.node.insert(at + offset, made)


def _constants(model: onnx.ModelProto, base: str):
    """A function making int64 initializers under fresh names."""
    def const(values: list[int]) -> str:
        name = _fresh_name(model, f"{base}_c")
        model.graph.initializer.append(numpy_helper.from_array(np.array(values, np.int64), name))
        return name
    return const
