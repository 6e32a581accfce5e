"""Each graph pass on small onnx.helper graphs: what it changes, what it leaves, and that
onnxruntime computes the same outputs before and after. Two end-to-end cases check,
through the real onnx2tf conversion, that the TFLite ops the passes target are gone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hub.graph.passes as passes_package
from hub.graph.normalise import normalise
from hub.graph.passes import PASSES, name_of, run_passes
from hub.graph.shapes import infer_shapes
from tests.conftest import convert_model, small_cnn_onnx

RNG = np.random.default_rng(0)


def rand(*shape: int, scale: float = 1.0) -> np.ndarray:
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def make(nodes, inputs: dict[str, list[int]], outputs: dict[str, list[int] | None], inits: dict[str, np.ndarray],
         opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "t",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs.items()],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return infer_shapes(model)


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def apply(model: onnx.ModelProto, *names: str, atol: float = 1e-4) -> tuple[onnx.ModelProto, list]:
    """Run the named passes (as normalise does) and check the outputs did not move."""
    feeds = {i.name: rand(*[d.dim_value for d in i.type.tensor_type.shape.dim], scale=2.0) for i in model.graph.input}
    before = run_ort(model, feeds)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    after_model, results = run_passes(copy, list(names))
    onnx.checker.check_model(after_model, full_check=True)
    after = run_ort(after_model, feeds)
    assert [o.name for o in after_model.graph.output] == [o.name for o in model.graph.output]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol)
    return after_model, results


def ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def changed(results, name: str) -> int:
    return next(r.changed for r in results if r.name == name)


def test_every_pass_module_is_registered_once():
    """A pass module left out of PASSES would never run; the folder and the list must agree."""
    modules = {p.stem for p in Path(passes_package.__file__).parent.glob("*.py") if p.stem != "__init__"}
    names = [name_of(p) for p in PASSES]
    assert sorted(names) == sorted(modules) and len(set(names)) == len(names)


# --- fold_constants ----------------------------------------------------------

def test_fold_constants_turns_shape_arithmetic_into_one_initializer():
    # torch-style flatten: Reshape(x, Concat(Gather(Shape(x), 0), [-1])), plus a Constant Add.
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["flat"]),
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(rand(48), "c")),
        helper.make_node("Add", ["c", "c"], ["c2"]),
        helper.make_node("Mul", ["flat", "c2"], ["y"]),
    ]
    model = make(nodes, {"x": [1, 3, 4, 4]}, {"y": [1, 48]},
                 {"zero": np.array(0, np.int64), "axes0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)})
    after, results = apply(model, "fold_constants")
    assert ops(after) == ["Reshape", "Mul"]
    assert changed(results, "fold_constants") == 6
    shape = next(t for t in after.graph.initializer if t.name == after.graph.node[0].input[1])
    assert numpy_helper.to_array(shape).tolist() == [1, -1]


def test_fold_constants_leaves_outputs_that_would_grow_the_model():
    nodes = [helper.make_node("ConstantOfShape", ["big_shape"], ["zeros"],
                              value=numpy_helper.from_array(np.array([1.0], np.float32))),
             helper.make_node("Add", ["x", "zeros"], ["y"])]
    model = make(nodes, {"x": [1, 64, 32, 32]}, {"y": [1, 64, 32, 32]},
                 {"big_shape": np.array([1, 64, 32, 32], np.int64)})
    after, results = apply(model, "fold_constants")
    assert ops(after) == ["ConstantOfShape", "Add"]
    assert changed(results, "fold_constants") == 0 and "grow" in results[0].detail


def test_fold_constants_runs_to_a_fixed_point():
    """The second Reshape's shape comes from Shape(first Reshape), whose shape is known only once the first
    target (Shape -> Cast -> Div -> Floor -> Cast -> Mul, beyond onnx's data propagation) is folded and shapes are
    inferred again: one round left Shape/Gather/Unsqueeze/Concat, as in a traced Swin (81 Shape nodes)."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["sf", "two"], ["half"]),
             helper.make_node("Floor", ["half"], ["floor"]),
             helper.make_node("Cast", ["floor"], ["si"], to=TensorProto.INT64),
             helper.make_node("Mul", ["si", "twos"], ["target"]),
             helper.make_node("Reshape", ["x", "target"], ["r"]),
             helper.make_node("Shape", ["r"], ["rs"]),
             helper.make_node("Gather", ["rs", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["flat"], axis=0),
             helper.make_node("Reshape", ["r", "flat"], ["y"])]
    model = make(nodes, {"x": [2, 4, 6, 8]}, {"y": None},
                 {"two": np.array(2, np.float32), "twos": np.array([2, 2, 2, 2], np.int64), "zero": np.array(0, np.int64),
                  "axes0": np.array([0], np.int64), "minus1": np.array([-1], np.int64)})
    after, results = apply(model, "fold_constants")
    assert ops(after) == ["Reshape", "Reshape"] and changed(results, "fold_constants") == 10


def test_fold_constants_folds_a_growing_constant_within_its_budget_and_leaves_one_beyond():
    """Swin's shifted-window mask, Sub(const, const) of (36, 16, 16): 36,864 bytes from 4,608 (what the old
    "never grow" rule left, and onnx2tf 1.29 then crashed on); a 4 MiB one passes the 128 KiB budget."""
    from hub.graph.passes.fold_constants import GROWTH_BUDGET_BYTES

    def mask_model(windows: int, side: int) -> onnx.ModelProto:
        nodes = [helper.make_node("Sub", ["rows", "cols"], ["mask"]), helper.make_node("Add", ["x", "mask"], ["y"])]
        return make(nodes, {"x": [1, windows, side, side]}, {"y": [1, windows, side, side]},
                    {"rows": rand(windows, 1, side), "cols": rand(windows, side, 1)})

    folded, results = apply(mask_model(36, 16), "fold_constants")
    assert ops(folded) == ["Add"] and "adding 32,256 bytes" in results[0].detail
    assert 36 * 16 * 16 * 4 > 16 * 1024 and 36 * 16 * 16 * 4 < GROWTH_BUDGET_BYTES
    left, results = apply(mask_model(64, 128), "fold_constants")
    assert ops(left) == ["Sub", "Add"] and f"budget of {GROWTH_BUDGET_BYTES:,} bytes" in results[0].detail


def test_fold_constants_leaves_no_shape_arithmetic_in_a_traced_shifted_window_attention():
    """Swin's shifted-window attention in miniature, traced by the TorchScript exporter: the window partition
    reads x.shape, the mask is built in forward (zeros, slice assignments, Sub, masked_fill)."""
    torch = pytest.importorskip("torch")
    import io

    class ShiftedWindows(torch.nn.Module):
        def __init__(self, ws: int = 4, shift: int = 2, c: int = 8) -> None:
            super().__init__()
            self.ws, self.shift, self.proj = ws, shift, torch.nn.Linear(c, c)

        def partition(self, x):
            b, h, w, c = x.shape
            x = x.view(b, h // self.ws, self.ws, w // self.ws, self.ws, c)
            return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, self.ws * self.ws, c)

        def forward(self, x):
            b, c, h, w = x.shape
            mask, count = torch.zeros((1, h, w, 1)), 0
            bands = (slice(0, -self.ws), slice(-self.ws, -self.shift), slice(-self.shift, None))
            for rows in bands:
                for cols in bands:
                    mask[:, rows, cols, :] = count
                    count += 1
            m = self.partition(mask).view(-1, self.ws * self.ws)
            bias = (m.unsqueeze(1) - m.unsqueeze(2)).masked_fill(m.unsqueeze(1) != m.unsqueeze(2), -100.0)
            win = self.partition(torch.roll(x.permute(0, 2, 3, 1), (-self.shift, -self.shift), (1, 2)))
            return ((self.proj(win) @ win.transpose(1, 2) + bias).softmax(-1)) @ win

    buffer = io.BytesIO()
    torch.onnx.export(ShiftedWindows().eval(), (torch.rand(1, 8, 24, 24),), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"])
    model = infer_shapes(onnx.load_from_string(buffer.getvalue()))
    after, results = apply(model, "fold_constants", atol=1e-5)
    assert not {"Shape", "Gather", "ConstantOfShape", "ScatterND", "Sub", "Where", "Equal"} & set(ops(after))


def test_fold_constants_folds_weights_however_large():
    """The light model-zoo files build every weight with ConstantOfShape: a Conv weight (directly) and a
    Gemm weight (through a Reshape) must become initializers, or onnx2tf fails ("axes don't match array")."""
    fill = numpy_helper.from_array(np.array([0.01], np.float32))
    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], value=fill),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("ConstantOfShape", ["g_shape"], ["g_flat"], value=fill),
             helper.make_node("Reshape", ["g_flat", "g_dims"], ["g"]),
             helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    model = make(nodes, {"x": [1, 64, 8, 8]}, {"y": [1, 10]},
                 {"w_shape": np.array([64, 64, 3, 3], np.int64), "g_shape": np.array([10 * 64 * 64], np.int64),
                  "g_dims": np.array([10, 64 * 64], np.int64)})
    after, results = apply(model, "fold_constants")
    assert ops(after) == ["Conv", "Flatten", "Gemm"] and changed(results, "fold_constants") == 3


def test_ir3_files_with_initializers_as_inputs_lift_to_opset_13():
    """IR 3 lists initializers among the inputs; once they are dropped the IR version must allow that,
    or the version converter finds no definition for the weights and the opset stays 9 (whose Softmax
    flattens from the axis on: onnx2tf then computes another function)."""
    w = rand(8, 4)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["s"]),
                               helper.make_node("Softmax", ["s"], ["y"])], "ir3",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
                               helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 3
    result = normalise(model)
    assert result.passes[0].detail == "opset 9 -> 13"
    assert [i.name for i in result.onnx_model.graph.input] == ["x"]
    x = rand(1, 8)
    np.testing.assert_allclose(run_ort(result.onnx_model, {"x": x})[0], run_ort(model, {"x": x})[0], rtol=1e-5)


# --- remove_noops --------------------------------------------------------------

def test_remove_noops_drops_identity_reshape_transpose_slice_flatten():
    nodes = [
        helper.make_node("Reshape", ["x", "same"], ["a"]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 1, 2, 3]),
        helper.make_node("Slice", ["b", "starts", "ends", "axes"], ["c"]),
        helper.make_node("Relu", ["c"], ["d"]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["f"], axis=1),
        helper.make_node("Flatten", ["f"], ["y"], axis=1),
    ]
    model = make(nodes, {"x": [1, 2, 5, 5]}, {"y": [1, 2]},
                 {"same": np.array([1, 2, 5, 5], np.int64), "starts": np.array([0, 0], np.int64),
                  "ends": np.array([2**62, 5], np.int64), "axes": np.array([1, -1], np.int64)})
    after, results = apply(model, "remove_noops")
    assert ops(after) == ["Relu", "GlobalAveragePool", "Flatten"]
    assert changed(results, "remove_noops") == 4


def test_remove_noops_keeps_real_slices_and_merges_chains():
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends"], ["a"]),
        helper.make_node("Transpose", ["a"], ["b"], perm=[0, 2, 3, 1]),
        helper.make_node("Transpose", ["b"], ["c"], perm=[0, 3, 1, 2]),  # cancels the one before
        helper.make_node("Reshape", ["c", "s1"], ["d"]),
        helper.make_node("Reshape", ["d", "s2"], ["y"]),
    ]
    model = make(nodes, {"x": [1, 2, 6, 4]}, {"y": [1, 40]},
                 {"starts": np.array([1], np.int64), "ends": np.array([6], np.int64),
                  "s1": np.array([2, 5, 4], np.int64), "s2": np.array([1, -1], np.int64)})
    model.graph.node[0].input.append("axes2")
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), "axes2"))
    model = infer_shapes(model)
    after, results = apply(model, "remove_noops")
    assert ops(after) == ["Slice", "Reshape"]
    assert changed(results, "remove_noops") == 3  # two Transposes merged, then gone; Reshapes merged


# --- canonical_slice -------------------------------------------------------------

def nasnet_crop(channels: int = 8, size: int = 12) -> onnx.ModelProto:
    """NASNet's adjust path as tf2onnx writes it: ZeroPadding2D((0,1),(0,1)) -> Cropping2D((1,0),(1,0))
    as a Slice over axes [0, 2, 3, 1] -> AveragePool(1, stride 2) -> 1x1 Conv, beside a plain path."""
    big = 2**31 - 1
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Pad", ["r", "pads"], ["p"]),
        helper.make_node("Slice", ["p", "starts", "ends", "axes"], ["s"]),
        helper.make_node("AveragePool", ["s"], ["a"], kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("AveragePool", ["r"], ["b"], kernel_shape=[1, 1], strides=[2, 2]),
        helper.make_node("Conv", ["a", "w1"], ["c1"], kernel_shape=[1, 1]),
        helper.make_node("Conv", ["b", "w2"], ["c2"], kernel_shape=[1, 1]),
        helper.make_node("Concat", ["c1", "c2"], ["y"], axis=1),
    ]
    half = size // 2
    return make(nodes, {"x": [1, channels, size, size]}, {"y": [1, channels, half, half]},
                {"pads": np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "starts": np.array([0, 1, 1, 0], np.int64),
                 "ends": np.array([big] * 4, np.int64), "axes": np.array([0, 2, 3, 1], np.int64),
                 "w1": rand(channels // 2, channels, 1, 1), "w2": rand(channels // 2, channels, 1, 1)})


def test_canonical_slice_keeps_only_the_cut_axes_in_order():
    after, results = apply(nasnet_crop(), "canonical_slice")
    assert changed(results, "canonical_slice") == 1
    node = next(n for n in after.graph.node if n.op_type == "Slice")
    assert [numpy_helper.to_array(t).tolist() for name in node.input[1:] for t in after.graph.initializer
            if t.name == name] == [[1, 1], [2**31 - 1] * 2, [2, 3], [1, 1]]
    again, results = apply(after, "canonical_slice")  # already canonical: left alone
    assert changed(results, "canonical_slice") == 0


# --- matmul_to_gemm / fold_batchnorm / fold_scale_shift ---------------------------

def test_matmul_with_constant_add_becomes_one_gemm_but_3d_matmul_stays():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"]),
             helper.make_node("MatMul", ["z", "w"], ["z2"])]
    model = make(nodes, {"x": [1, 8], "z": [1, 3, 8]}, {"y": [1, 4], "z2": [1, 3, 4]},
                 {"w": rand(8, 4), "b": rand(4)})
    after, results = apply(model, "matmul_to_gemm")
    assert ops(after) == ["Gemm", "MatMul"] and changed(results, "matmul_to_gemm") == 1


def _bn(prefix: str, c: int) -> dict[str, np.ndarray]:
    return {f"{prefix}_g": rand(c) + 1, f"{prefix}_b": rand(c), f"{prefix}_m": rand(c),
            f"{prefix}_v": np.abs(rand(c)) + 0.5}


def test_fold_batchnorm_into_conv_gemm_and_matmul_add():
    nodes = [
        helper.make_node("Conv", ["x", "wc"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn1_g", "bn1_b", "bn1_m", "bn1_v"], ["c_bn"], epsilon=1e-3),
        helper.make_node("Relu", ["c_bn"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["g"], transB=0, alpha=0.5),
        helper.make_node("BatchNormalization", ["g", "bn2_g", "bn2_b", "bn2_m", "bn2_v"], ["g_bn"]),
        helper.make_node("MatMul", ["g_bn", "wm"], ["m"]),
        helper.make_node("Add", ["m", "bm"], ["ma"]),
        helper.make_node("BatchNormalization", ["ma", "bn3_g", "bn3_b", "bn3_m", "bn3_v"], ["y"]),
    ]
    inits = {"wc": rand(6, 3, 3, 3), "wg": rand(6, 5), "bg": rand(5), "wm": rand(5, 4), "bm": rand(4),
             **_bn("bn1", 6), **_bn("bn2", 5), **_bn("bn3", 4)}
    model = make(nodes, {"x": [1, 3, 8, 8]}, {"y": [1, 4]}, inits)
    after, results = apply(model, "matmul_to_gemm", "fold_batchnorm")
    assert "BatchNormalization" not in ops(after)
    assert ops(after) == ["Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "Gemm"]
    assert changed(results, "fold_batchnorm") == 3


def test_fold_batchnorm_leaves_weights_shared_with_another_layer_intact():
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]),
             helper.make_node("BatchNormalization", ["a", "bn_g", "bn_b", "bn_m", "bn_v"], ["y1"]),
             helper.make_node("Conv", ["x", "w"], ["y2"])]
    model = make(nodes, {"x": [1, 3, 4, 4]}, {"y1": [1, 4, 4, 4], "y2": [1, 4, 4, 4]}, {"w": rand(4, 3, 1, 1), **_bn("bn", 4)})
    after, results = apply(model, "fold_batchnorm")
    assert ops(after) == ["Conv", "Conv"] and changed(results, "fold_batchnorm") == 1


def test_fold_scale_shift_removes_the_mul_add_pairs_tf2onnx_writes_for_dense_batchnorm():
    # The MLPerf Tiny autoencoder pattern: Gemm -> Mul -> Add -> Relu, twice.
    nodes, inits = [], {}
    src = "x"
    for i, (k, n) in enumerate([(16, 8), (8, 16)]):
        nodes += [helper.make_node("Gemm", [src, f"w{i}", f"b{i}"], [f"g{i}"]),
                  helper.make_node("Mul", [f"g{i}", f"s{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"t{i}", f"m{i}"], [f"a{i}"]),  # constant first: still folds
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        inits.update({f"w{i}": rand(k, n), f"b{i}": rand(n), f"s{i}": rand(n), f"t{i}": rand(n)})
        src = f"r{i}"
    nodes.append(helper.make_node("Identity", [src], ["y"]))
    model = make(nodes, {"x": [1, 16]}, {"y": [1, 16]}, inits)
    after, results = apply(model, "fold_scale_shift")
    assert ops(after) == ["Gemm", "Relu", "Gemm", "Relu", "Identity"]
    assert changed(results, "fold_scale_shift") == 4


def test_fold_scale_shift_on_conv_channels_and_not_on_spatial_constants():
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
             helper.make_node("Div", ["c", "per_channel"], ["d"]),
             helper.make_node("Sub", ["d", "scalar"], ["e"]),
             helper.make_node("Mul", ["e", "per_pixel"], ["y"])]
    inits = {"w": rand(4, 2, 3, 3), "b": rand(4), "per_channel": np.abs(rand(4, 1, 1)) + 0.5,
             "scalar": np.array(0.3, np.float32), "per_pixel": rand(1, 1, 4, 4)}
    model = make(nodes, {"x": [1, 2, 6, 6]}, {"y": [1, 4, 4, 4]}, inits)
    after, results = apply(model, "fold_scale_shift")
    assert ops(after) == ["Conv", "Mul"] and changed(results, "fold_scale_shift") == 2


def test_fold_scale_shift_on_3d_matmul_folds_scale_but_not_shift():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Mul", ["m", "s"], ["a"]),
             helper.make_node("Add", ["a", "t"], ["y"])]
    model = make(nodes, {"x": [1, 3, 8]}, {"y": [1, 3, 4]}, {"w": rand(8, 4), "s": rand(4), "t": rand(4)})
    after, results = apply(model, "fold_scale_shift")
    assert ops(after) == ["MatMul", "Add"] and changed(results, "fold_scale_shift") == 1


# --- fuse_activations / canonical_pooling --------------------------------------------

def test_fuse_activations_rewrites_clip_max_min_into_relu_and_relu6():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"]),
        helper.make_node("Clip", ["c1", "zero"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"]),
        helper.make_node("Max", ["c2", "zero"], ["m"]),
        helper.make_node("Min", ["m", "six"], ["r2"]),
        helper.make_node("Conv", ["r2", "w2"], ["c3"]),
        helper.make_node("Max", ["zero", "c3"], ["r3"]),
        helper.make_node("Relu", ["r3"], ["y"]),
    ]
    inits = {"w": rand(4, 2, 1, 1), "w2": rand(4, 4, 1, 1), "zero": np.array(0.0, np.float32),
             "six": np.array(6.0, np.float32)}
    model = make(nodes, {"x": [1, 2, 3, 3]}, {"y": [1, 4, 3, 3]}, inits)
    after, results = apply(model, "fuse_activations")
    assert ops(after) == ["Conv", "Relu", "Conv", "Clip", "Conv", "Relu"]
    assert changed(results, "fuse_activations") == 5  # the Max(c2, 0) becomes a Relu first


def test_canonical_pooling_states_pad_free_average_pools_with_count_include_pad():
    nodes = [helper.make_node("AveragePool", ["x"], ["a"], kernel_shape=[5, 3], strides=[5, 3]),
             helper.make_node("AveragePool", ["x"], ["b"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])]
    model = make(nodes, {"x": [1, 2, 5, 3]}, {"a": [1, 2, 1, 1], "b": [1, 2, 5, 3]}, {})
    after, results = apply(model, "canonical_pooling")
    attrs = [{a.name: helper.get_attribute_value(a) for a in n.attribute} for n in after.graph.node]
    assert attrs[0]["count_include_pad"] == 1 and "count_include_pad" not in attrs[1]
    assert changed(results, "canonical_pooling") == 1


def test_canonical_pooling_turns_global_average_pool_on_images_into_a_window():
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["a"]), helper.make_node("GlobalAveragePool", ["z"], ["b"])]
    model = make(nodes, {"x": [1, 3, 5, 7], "z": [1, 3, 9]}, {"a": [1, 3, 1, 1], "b": [1, 3, 1]}, {})
    after, results = apply(model, "canonical_pooling")
    assert ops(after) == ["AveragePool", "GlobalAveragePool"]  # 1-D pools stay as they are
    kernel = next(a for a in after.graph.node[0].attribute if a.name == "kernel_shape")
    assert list(kernel.ints) == [5, 7] and changed(results, "canonical_pooling") == 2


def test_pad_maxpool_pads_non_negative_inputs_with_an_explicit_zero_pad():
    """Issue 12: onnx2tf pads non-SAME MaxPool padding with -3.4e38 (PADV2), which wrecks int8; after a
    Relu or Clip(>= 0) a zero Pad is exact, ceil_mode's extra row and column included. SAME-shaped pads
    and signed inputs stay."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["x", "zero", "six"], ["c"]),
             helper.make_node("MaxPool", ["c"], ["b"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]),
             helper.make_node("MaxPool", ["r"], ["same"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),  # = SAME
             helper.make_node("MaxPool", ["r"], ["ceil"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              ceil_mode=1),
             helper.make_node("MaxPool", ["x"], ["signed"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])]
    model = make(nodes, {"x": [1, 2, 8, 8]}, {n: None for n in ("a", "b", "same", "ceil", "signed")},
                 {"zero": np.array(0.0, np.float32), "six": np.array(6.0, np.float32)})
    after, results = apply(model, "pad_maxpool", atol=0)
    assert changed(results, "pad_maxpool") == 3
    assert ops(after) == ["Relu", "Pad", "MaxPool", "Clip", "Pad", "MaxPool", "MaxPool", "Pad", "MaxPool", "MaxPool"]
    pads = [numpy_helper.to_array(next(i for i in after.graph.initializer if i.name == n.input[1])).tolist()
            for n in after.graph.node if n.op_type == "Pad"]
    assert pads == [[0, 0, 1, 1, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0, 1, 1], [0, 0, 1, 1, 0, 0, 2, 2]]
    pools = {n.output[0]: {a.name: helper.get_attribute_value(a) for a in n.attribute}
             for n in after.graph.node if n.op_type == "MaxPool"}
    assert pools["a"]["pads"] == pools["b"]["pads"] == pools["ceil"]["pads"] == [0, 0, 0, 0]
    assert pools["ceil"]["ceil_mode"] == 0
    assert pools["same"]["pads"] == pools["signed"]["pads"] == [1, 1, 1, 1]


def test_pad_maxpool_sees_through_concat_and_maxpool():
    """GoogLeNet: ceil_mode MaxPool(3, stride 2) over a Concat of Relus, then over that pool's output."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Relu", ["y"], ["s"]),
             helper.make_node("Concat", ["r", "s"], ["cat"], axis=1),
             helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
             helper.make_node("MaxPool", ["p"], ["q"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    model = make(nodes, {"x": [1, 2, 12, 12], "y": [1, 2, 12, 12]}, {"q": None}, {})
    after, results = apply(model, "pad_maxpool", atol=0)
    assert changed(results, "pad_maxpool") == 2
    assert ops(after) == ["Relu", "Relu", "Concat", "Pad", "MaxPool", "Pad", "MaxPool"]


def test_canonical_pooling_keeps_squeeze_and_excitation_squeezes_global():
    """x -> GAP -> Conv -> SiLU -> Conv -> Sigmoid -> Mul(x, gate) -> GAP (head): only the head's pool
    becomes a window (AVERAGE_POOL_2D); the squeeze stays global, so onnx2tf writes MEAN."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["s"]),
        helper.make_node("Conv", ["s", "w1"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["rs"]),
        helper.make_node("Mul", ["r", "rs"], ["silu"]),
        helper.make_node("Conv", ["silu", "w2"], ["e"]),
        helper.make_node("Sigmoid", ["e"], ["gate"]),
        helper.make_node("Mul", ["x", "gate"], ["scaled"]),
        helper.make_node("GlobalAveragePool", ["scaled"], ["y"]),
    ]
    model = make(nodes, {"x": [1, 8, 6, 6]}, {"y": [1, 8, 1, 1]}, {"w1": rand(2, 8, 1, 1), "w2": rand(8, 2, 1, 1)})
    after, results = apply(model, "canonical_pooling")
    assert [n.op_type for n in after.graph.node if "Pool" in n.op_type] == ["GlobalAveragePool", "AveragePool"]
    assert "turned 1 GlobalAveragePool" in next(r.detail for r in results if r.name == "canonical_pooling")


def test_all_passes_leave_the_small_cnn_equivalent():
    model = small_cnn_onnx()
    after, results = apply(model, *map(name_of, PASSES))
    assert [r.name for r in results] == [name_of(p) for p in PASSES]
    assert ops(after) == ["Conv", "Relu", "Conv", "Relu", "AveragePool", "Flatten", "Gemm"]


# --- end to end: the TFLite ops the passes are for are gone ------------------------------

def _convert(model: onnx.ModelProto):
    from hub.tflite.model import read_tflite

    tflite_bytes, normalised = convert_model(model)
    return read_tflite(tflite_bytes), normalised


@pytest.mark.parametrize("case", ["dense_batchnorm", "non_square_pool"])
def test_converted_graph_has_no_extra_add_or_strided_slice(case):
    if case == "dense_batchnorm":  # the autoencoder's nine extra ADDs
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["g"]), helper.make_node("Mul", ["g", "s"], ["m"]),
                 helper.make_node("Add", ["m", "t"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
                 helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
        model = make(nodes, {"x": [1, 32]}, {"y": [1, 32]},
                     {"w": rand(32, 16, scale=0.3), "b": rand(16), "s": np.abs(rand(16)) + 0.5, "t": rand(16),
                      "w2": rand(16, 32, scale=0.3), "b2": rand(32)})
        expected = {"FULLY_CONNECTED": 2}
    else:  # DS-CNN's two STRIDED_SLICEs after its 25x5 pool
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["c"], ["r"]),
                 helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[10, 4], strides=[10, 4]),
                 helper.make_node("Reshape", ["p", "flat"], ["f"]),
                 helper.make_node("Gemm", ["f", "w2", "b2"], ["y"])]
        model = make(nodes, {"x": [1, 1, 10, 4]}, {"y": [1, 5]},
                     {"w": rand(8, 1, 3, 3, scale=0.5), "b": rand(8), "flat": np.array([-1, 8], np.int64),
                      "w2": rand(8, 5), "b2": rand(5)})
        expected = {"CONV_2D": 1, "AVERAGE_POOL_2D": 1, "FULLY_CONNECTED": 1}
    tflite, normalised = _convert(model)
    assert tflite.op_histogram() == expected, [p for p in normalised.passes if p.changed]


def test_unused_initializers_are_dropped_but_subgraph_reads_are_kept():
    from hub.graph.passes import remove_unused_initializers

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    branch_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])
    then = helper.make_graph([helper.make_node("Add", ["x", "w_sub"], ["b"])], "then", [], [branch_out])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "else", [], [branch_out])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(np.ones(2, np.float32), "w_sub"),
             numpy_helper.from_array(np.zeros((), np.float32), "zero"),
             numpy_helper.from_array(np.ones((64, 64), np.float32), "stale")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)])
    model, removed, detail = remove_unused_initializers.run(model)
    assert removed == 1 and "1 unused" in detail
    assert sorted(t.name for t in model.graph.initializer) == ["w_sub", "zero"]


# --- decompose_groupnorm ---------------------------------------------------------------------

@pytest.mark.parametrize("opset", [18, 21])
def test_decompose_groupnorm_rewrites_onnx_groupnormalization(opset):
    per = 2 if opset == 18 else 8  # opset 18: one scale/bias per group; 21: per channel
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-5, name="gn")
    model = make([node], {"x": [1, 8, 5, 5]}, {"y": [1, 8, 5, 5]}, {"s": rand(per) + 1, "b": rand(per)}, opset=opset)
    after, results = apply(model, "decompose_groupnorm")
    assert changed(results, "decompose_groupnorm") == 1 and "GroupNormalization" not in ops(after)
    assert "Reshape" not in ops(after)


def test_decompose_groupnorm_rewrites_the_torch_export_pattern_with_its_affine():
    torch = pytest.importorskip("torch")
    import io

    from fixtures.torch_models import GroupNormCNN

    buffer = io.BytesIO()
    torch.onnx.export(GroupNormCNN().eval(), (torch.rand(1, 3, 32, 32),), buffer, dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["output"])
    model = normalise(onnx.load_from_string(buffer.getvalue()), {}, passes=["fold_constants"]).onnx_model
    assert ops(model).count("InstanceNormalization") == 2
    after, results = apply(model, "decompose_groupnorm")
    assert changed(results, "decompose_groupnorm") == 2
    assert not {"InstanceNormalization", "Reshape"} & set(ops(after))
    assert ops(after).count("Mul") == ops(model).count("Mul") - 2 + 2 * 3  # torch's gamma Mul is absorbed


def test_fold_constants_refuses_a_weight_no_onnx_file_could_hold():
    """A crafted ConstantOfShape weight of 2^40 floats is refused in one line, not allocated."""
    from hub.errors import InputError

    nodes = [helper.make_node("ConstantOfShape", ["w_shape"], ["w"], name="huge"),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    model = make(nodes, {"x": [1, 4, 8, 8]}, {"y": None}, {"w_shape": np.array([2**20, 4, 512, 512], np.int64)})
    with pytest.raises(InputError, match="node 'huge' builds a weight of 4,398,046,511,104 bytes"):
        run_passes(model, ["fold_constants"])
