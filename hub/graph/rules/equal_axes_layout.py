"""Lay out a token map that onnx2tf cannot tell from its channels-last form: C == H == W.

Pyramid transformers (PVTv2, SegFormer: Mix-FFN, the spatial-reduction attention, each stage's end) turn tokens
back into an image for a Conv, as Reshape (B, N, C) -> (B, H, W, C) + Transpose (0, 3, 1, 2), or Transpose
(B, N, C) -> (B, C, N) + Reshape (B, C, H, W); Swin views its tokens as (B, H, W, C) for the shifted-window roll
(Slice + Concat) and patch merging. onnx2tf 1.29 keeps a 4-D tensor channels-last in TensorFlow and decides whether
a tensor is already so by comparing its TF shape with the ONNX one; when C, H and W are equal the shapes cannot
say, and it assumes channels-last (utils/common_functions.py, inverted_operation_enable_disable: "Avoiding
patterns of misjudgment when the second and subsequent dimensions are all the same value"). But its Reshape writes
the ONNX order (ops/Reshape.py), so every reader that converts axes (Slice, Concat, Transpose: convert_axis) reads
the wrong ones, and Conv.py skips its forced transpose "if all dimensions of CW or CHW or CDHW have the same value"
while its search over layouts builds the Conv without the explicit padding (a k3/s2/p1 patch embedding: every
candidate's shape mismatches), so it keeps the wrong one. Seen at 16 channels on a 16x16 map: PVTv2 and SegFormer
at 64x64 (float32 cosine -0.10 and -0.05 against the source), Swin at 32x32 with patch 2 (its roll).

Rewritten, exactly the same values, into a chain whose TensorFlow data is channels-last as onnx2tf assumes:
    Reshape -> X                                 becomes  Reshape -> Transpose (0,2,3,1) -> Transpose (0,3,1,2) -> X
    Reshape -> (B, H, W, C) -> Transpose (0,3,1,2)  becomes  Reshape -> Transpose (0,2,3,1) -> Transpose (0,2,3,1)
Each pair composes to the original permutation in ONNX; onnx2tf lowers the first Transpose of each pair to an
identity and the second to the one channels-last TRANSPOSE the readers need. Matched only where onnx2tf goes wrong:
a Reshape from another rank (tokens, windows) to a static 4-D tensor with C == H == W > 1 that is not a graph output.
"""
from __future__ import annotations

import onnx

from hub.artifacts import Rewrite
from hub.graph.edit import attr, consumers, emit, fresh_name, graph_output_names, set_attr, sole_consumer, static_shape

UNBLOCKS = ()  # a layout onnx2tf gets wrong, not an op TFLM lacks
DOES = "gives a token map with C == H == W a layout onnx2tf reads right"  # hub check says "the <rule> rule <DOES>"
TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type == "Reshape"]:
        if not equal_axes_map(model, node):
            continue
        transpose = sole_consumer(model, node.output[0])
        if transpose is not None and transpose.op_type == "Transpose" and attr(transpose, "perm") == TO_NCHW:
            _split_transpose(model, transpose)
            rewrites.append(Rewrite(node=transpose.name, op="Transpose", into="two channels-last Transposes"))
        elif node.output[0] not in graph_output_names(model):
            _add_transpose_pair(model, node)
            rewrites.append(Rewrite(node=node.name, op="Reshape", into="Reshape + Transpose pair"))
    return model, rewrites


def equal_axes_map(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    """A Reshape of a tensor of another rank (tokens, windows) to a static 4-D one whose three non-batch axes are equal."""
    source, shape = static_shape(model, node.input[0]), static_shape(model, node.output[0])
    return (source is not None and len(source) != 4 and shape is not None and len(shape) == 4
            and shape[1] == shape[2] == shape[3] > 1)


def _split_transpose(model: onnx.ModelProto, transpose: onnx.NodeProto) -> None:
    """Transpose (0,3,1,2) -> Transpose (0,2,3,1) twice (the same permutation composed)."""
    out = transpose.output[0]
    half = fresh_name(model, f"{transpose.name or out}_half")
    set_attr(transpose, "perm", TO_NHWC)
    transpose.output[0] = half
    at = list(model.graph.node).index(transpose)
    model.graph.node.insert(at + 1, emit("Transpose", [half], out, perm=TO_NHWC))


def _add_transpose_pair(model: onnx.ModelProto, reshape: onnx.NodeProto) -> None:
    """Reshape's readers read it through Transpose (0,2,3,1) -> Transpose (0,3,1,2) (an identity in ONNX)."""
    name = reshape.output[0]
    base = reshape.name or name
    nhwc, back = fresh_name(model, f"{base}_nhwc"), fresh_name(model, f"{base}_nchw")
    for reader in consumers(model, name):
        reader.input[:] = [back if i == name else i for i in reader.input]
    at = list(model.graph.node).index(reshape)
    model.graph.node.insert(at + 1, emit("Transpose", [name], nhwc, perm=TO_NHWC))
    model.graph.node.insert(at + 2, emit("Transpose", [nhwc], back, perm=TO_NCHW))
