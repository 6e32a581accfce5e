"""Drop a Transpose and its inverse when only elementwise ops with scalar operands stand between them.

tf2onnx exports a Keras model NCHW by wrapping each op it cannot lay out in Transposes; a Rescaling layer in front
of the first convolution (Keras MobileNetV3's `include_preprocessing`) stays as
input -> Transpose(0,2,3,1) -> Mul(1/127.5) -> Add(-1) -> Transpose(0,3,1,2) -> Conv. An elementwise op whose
other operands are scalars computes the same values in either layout, so the pair cancels. Left in place, the
input reaches no convolution through layout-keeping ops: hub.convert.layout kept it channels-first in the .tflite,
and a Keras user's channels-last calibration samples were refused. Exact.
"""
from __future__ import annotations

import onnx

from hub.graph.edit import attr, constant, rename_input, sole_consumer

# Ops that compute each output element from the same element of their data input (and scalar operands)
ELEMENTWISE = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu", "Abs", "Neg",
               "Sqrt", "Exp", "Log", "Reciprocal", "Floor", "Ceil", "Round", "Cast", "Add", "Sub", "Mul", "Div", "Pow",
               "Max", "Min"}


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, str]:
    cancelled = 0
    for first in [n for n in model.graph.node if n.op_type == "Transpose"]:
        if first not in model.graph.node:
            continue
        found = _chain_to_inverse(model, first)
        if found is None:
            continue
        chain, second = found
        rename_input(model, first.output[0], first.input[0])
        rename_input(model, second.output[0], chain[-1].output[0])
        written = {n.output[0] for n in chain}  # their shapes change with the layout: inferred again
        kept = [v for v in model.graph.value_info if v.name not in written]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept)
        model.graph.node.remove(first)
        model.graph.node.remove(second)
        cancelled += 1
    return model, cancelled, f"dropped {cancelled} Transpose pairs around elementwise ops" if cancelled else ""


def _chain_to_inverse(model: onnx.ModelProto, first: onnx.NodeProto
                      ) -> tuple[list[onnx.NodeProto], onnx.NodeProto] | None:
    """The elementwise ops after `first` (each read once) and the Transpose that undoes it, or None."""
    chain, node = [], sole_consumer(model, first.output[0])
    while node is not None and node.op_type in ELEMENTWISE and _scalar_operands(model, node, chain, first):
        chain.append(node)
        node = sole_consumer(model, node.output[0])
    if not chain or node is None or node.op_type != "Transpose":
        return None
    outer, inner = attr(first, "perm"), attr(node, "perm")
    if outer is None or inner is None or [int(outer[p]) for p in inner] != list(range(len(outer))):
        return None
    return chain, node


def _scalar_operands(model: onnx.ModelProto, node: onnx.NodeProto, chain: list[onnx.NodeProto],
                     first: onnx.NodeProto) -> bool:
    """`node` reads the chain's tensor once, every other input is a one-element constant (or absent), one output."""
    data = chain[-1].output[0] if chain else first.output[0]
    others = [i for i in node.input if i != data]
    if len(node.input) - len(others) != 1 or len([o for o in node.output if o]) != 1:
        return False
    return all(not name or (value := constant(model, name)) is not None and value.size == 1 for name in others)
