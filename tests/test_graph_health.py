"""hub.graph.health: the invariant check between graph stages passes healthy graphs and names what a
broken pass left (the converter would fail minutes later on some other node)."""
from __future__ import annotations

from dataclasses import replace

import onnx
import pytest
from onnx import TensorProto, helper

from hub.graph.health import GraphHealthError, check_graph, check_health
from hub.graph.normalise import normalise
from tests.conftest import small_cnn_onnx


def test_a_normalised_graph_is_healthy():
    normalised = normalise(small_cnn_onnx())
    assert check_health(normalised, check_graph(normalised, "normalise"), "rewrite") is normalised


def test_a_node_reading_an_undefined_tensor_is_named():
    normalised = normalise(small_cnn_onnx())
    broken = onnx.ModelProto()
    broken.CopyFrom(normalised.onnx_model)
    broken.graph.node[1].input[0] = "nowhere"
    with pytest.raises(GraphHealthError, match="the rewrite stage .* reads 'nowhere' before anything writes it"):
        check_graph(replace(normalised, onnx_model=broken), "rewrite")


def test_nodes_out_of_order_are_caught():
    normalised = normalise(small_cnn_onnx())
    swapped = onnx.ModelProto()
    swapped.CopyFrom(normalised.onnx_model)
    first, second = swapped.graph.node[0], swapped.graph.node[1]
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(first)
    b.CopyFrom(second)
    swapped.graph.node[0].CopyFrom(b)
    swapped.graph.node[1].CopyFrom(a)
    with pytest.raises(GraphHealthError, match="before anything writes it"):
        check_graph(replace(normalised, onnx_model=swapped), "normalise")


def test_a_changed_interface_is_caught():
    normalised = normalise(small_cnn_onnx())
    renamed = replace(normalised, outputs=[replace(normalised.outputs[0], name="other")])
    with pytest.raises(GraphHealthError, match="renamed a model output"):
        check_health(normalised, renamed, "rewrite")
    reshaped = replace(normalised, inputs=[replace(normalised.inputs[0], shape=(1, 3, 8, 8))])
    with pytest.raises(GraphHealthError, match="renamed a model input or changed its shape"):
        check_health(normalised, reshaped, "rewrite")


def test_an_output_nothing_writes_is_caught():
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 4])])
    normalised = normalise(small_cnn_onnx())
    with pytest.raises(GraphHealthError, match="no node writes the output 'z'"):
        check_graph(replace(normalised, onnx_model=helper.make_model(graph)), "normalise")
