"""The unrolled recurrent cells' Splits as one TFLite SPLIT each, inside the converter child.

onnx2tf 1.29 lowers an ONNX Split into one STRIDED_SLICE per output (onnx2tf/ops/Split.py: "Suppression
of FlexSplitV generation", its issue 751). hub.graph.rules.unroll_rnn splits the projected inputs of all
steps once and each step's gates once: as slices that is 4 of the GRU step's 14 TFLite ops, and TFLM pays
its per-op bookkeeping in the arena for each. `install` lets onnx2tf lower the Splits unroll_rnn names
(rank 2, constant sizes: no layout change applies) and then rebinds their outputs to one tf.split, which
TensorFlow's converter writes as one builtin SPLIT (equal parts) or SPLIT_V; the slices onnx2tf built are
then read by nothing and left out of the model. Exact: the same values.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np

from hub.graph.rules.unroll_rnn import SPLIT_MARK


def install(onnx2tf_split: ModuleType, tf: ModuleType) -> None:
    original = onnx2tf_split.make_node

    def make_node(*, graph_node, tf_layers_dict: dict, **kwargs):
        original(graph_node=graph_node, tf_layers_dict=tf_layers_dict, **kwargs)
        if not (graph_node.name or "").endswith(SPLIT_MARK):
            return
        source = tf_layers_dict[graph_node.inputs[0].name]["tf_node"]
        axis, count = int(graph_node.attrs.get("axis", 0)), len(graph_node.outputs)
        if len(source.shape) != 2:
            return
        sizes = ([int(v) for v in np.asarray(graph_node.inputs[1].values).reshape(-1)] if len(graph_node.inputs) > 1
                 else [source.shape[axis] // count] * count)  # no sizes: equal parts (unroll_rnn's step split)
        if sum(sizes) != source.shape[axis]:
            return
        parts = tf.split(source, count if len(set(sizes)) == 1 else sizes, axis=axis)
        for part, output in zip(parts, graph_node.outputs):
            tf_layers_dict[output.name]["tf_node"] = part

    onnx2tf_split.make_node = make_node
