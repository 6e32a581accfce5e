"""PyTorch adapter: each input format, its ONNX equivalence in onnxruntime, and each clear error."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.export import Dim

import hub.adapters
from fixtures.torch_models import TinyCNN, TwoInputNet
from hub.adapters.pytorch import PyTorchAdapter
from hub.artifacts import LoadOptions
from hub.errors import IncompatibleError, InputError
from hub.graph.network import module_path_from_name as _module_path
from tests.conftest import FIXTURES, ROOT, run_hub

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.* in torch 2.13

MODELS_PY = FIXTURES / "torch_models.py"
SHAPE = (1, 3, 32, 32)
TOLERANCE = 1e-4  # relative max abs error, ONNX in onnxruntime vs the source in torch


def rel_err(ours: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(ours - ref).max() / max(1e-6, float(np.abs(ref).max())))


def assert_equivalent(source, reference: Callable, shapes: dict[str, tuple], seeds=(0, 1, 2)) -> None:
    """The adapter's ONNX and the torch module agree on random inputs (uniform and normal)."""
    model = source.onnx_model
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(shapes)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        feeds = {n: (rng.random(s) if seed % 2 == 0 else rng.standard_normal(s)).astype(np.float32)
                 for n, s in shapes.items()}
        ours = session.run(None, feeds)
        with torch.no_grad():
            ref = reference(*(torch.from_numpy(v) for v in feeds.values()))
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        assert len(ours) == len(refs)
        for a, b in zip(ours, refs):
            assert a.shape == tuple(b.shape)
            assert rel_err(a, b.numpy()) <= TOLERANCE


def load(path: Path | str, **options) -> object:
    return PyTorchAdapter().load(Path(path), LoadOptions(**options))


def trained_tiny_cnn() -> TinyCNN:
    model = TinyCNN()
    model.load_state_dict(torch.load(FIXTURES / "tiny_cnn_state.pth", weights_only=True))
    return model.eval()


def one_line_input_error(call: Callable, *needles: str) -> str:
    with pytest.raises(InputError) as info:
        call()
    text = info.value.one_line()
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text
    return text


# -- files made once per module -------------------------------------------------------------

@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    """Variants the committed fixtures do not cover; small and quick to make."""
    tmp = tmp_path_factory.mktemp("torch_made")
    torch.manual_seed(0)
    cnn = trained_tiny_cnn()
    files = {
        "script_noshape": tmp / "noshape.pt",
        "legacy": tmp / "legacy_state.pth",
        "checkpoint": tmp / "checkpoint.pth",
        "dyn_batch": tmp / "dyn_batch.pt2",
        "dyn_hw": tmp / "dyn_hw.pt2",
        "a_list": tmp / "a_list.pth",
        "plain_zip": tmp / "plain.zip",
        "bad_py": tmp / "broken.py",
        "eig_py": tmp / "eig_net.py",
        "raises_py": tmp / "raises.py",
    }
    torch.jit.save(torch.jit.script(cnn), str(files["script_noshape"]))
    torch.save(cnn.state_dict(), files["legacy"], _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": cnn.state_dict()}, files["checkpoint"])
    batch = Dim("batch")
    torch.export.save(torch.export.export(cnn, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"image": {0: batch}}),
                      str(files["dyn_batch"]))
    dims = {0: batch, 2: Dim("h", min=8, max=64), 3: Dim("w", min=8, max=64)}
    torch.export.save(torch.export.export(cnn, (torch.rand(2, 3, 32, 32),), dynamic_shapes={"image": dims}),
                      str(files["dyn_hw"]))
    torch.save([1, 2, 3], files["a_list"])
    with zipfile.ZipFile(files["plain_zip"], "w") as z:
        z.writestr("notes/readme.txt", "hello")
    files["bad_py"].write_text("def broken(:\n")
    files["eig_py"].write_text("import torch\n\nclass EigNet(torch.nn.Module):\n"
                               "    def forward(self, x):\n        return torch.linalg.eigvals(x).abs()\n")
    files["raises_py"].write_text("raise RuntimeError('no GPU here')\n")
    for name, source in (("resnet_tiny.pt", "resnet"), ("tiny_cnn.pt2", "pt2"), ("tiny_cnn_state.pth", "state")):
        data = (FIXTURES / name).read_bytes()
        files[f"truncated_{source}"] = tmp / f"truncated_{name}"
        files[f"truncated_{source}"].write_bytes(data[: len(data) // 2])
    return files


# -- sniffing -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["resnet_tiny.pt", "tiny_cnn.pt2", "tiny_cnn_state.pth", "tiny_cnn_pickled.pth",
                                  "torch_models.py"])
def test_registry_picks_pytorch_for_each_fixture(name: str) -> None:
    assert isinstance(hub.adapters.find_adapter(FIXTURES / name), PyTorchAdapter)


def test_sniff_decides_from_content_not_extension(made, tmp_path: Path) -> None:
    sniff = PyTorchAdapter().sniff
    renamed = tmp_path / "model.bin"  # a TorchScript archive under a foreign extension
    renamed.write_bytes((FIXTURES / "resnet_tiny.pt").read_bytes())
    assert sniff(renamed)
    assert sniff(made["legacy"])  # pre-1.6 torch.save: not a zip, torch's pickle magic
    for key in ("truncated_resnet", "truncated_pt2", "truncated_state"):
        assert sniff(made[key])  # damaged, but recognisably PyTorch: gets a precise error later
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"\x08\x07" + bytes(100))
    assert not sniff(fake)
    assert not sniff(made["plain_zip"])
    assert not sniff(made["bad_py"])  # .py that does not parse
    assert not sniff(FIXTURES / "keras_cnn.keras")
    assert not sniff(FIXTURES)


def test_sniff_does_not_import_torch() -> None:
    code = ("import sys\nfrom pathlib import Path\nfrom hub.adapters.pytorch import PyTorchAdapter\n"
            "a = PyTorchAdapter()\n"
            "assert all(a.sniff(Path('fixtures') / n) for n in "
            "('resnet_tiny.pt', 'tiny_cnn.pt2', 'tiny_cnn_state.pth', 'torch_models.py'))\n"
            "print('torch' in sys.modules, 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "False"]


# -- each format, equivalent in onnxruntime -------------------------------------------------

def test_torchscript_resnet_uses_the_shape_stored_in_the_archive() -> None:
    source = hub.adapters.load(FIXTURES / "resnet_tiny.pt")
    assert source.framework == "pytorch"
    assert source.source_layouts == {"image": "NCHW"}
    assert_equivalent(source, torch.jit.load(str(FIXTURES / "resnet_tiny.pt")), {"image": SHAPE})


def test_torchscript_keeps_module_paths_static_shapes_and_opset() -> None:
    model = hub.adapters.load(FIXTURES / "resnet_tiny.pt").onnx_model
    onnx.checker.check_model(model)
    assert 13 <= {o.domain: o.version for o in model.opset_import}[""] <= 18
    paths = {p.value for n in model.graph.node for p in n.metadata_props if p.key == "pytorch.module"}
    assert {"stem.0", "layer1.conv1", "layer2.shortcut.0", "fc"} <= paths
    out = model.graph.output[0]
    assert out.name == "output" and [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 10]
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == list(SHAPE)
    assert {p.key: p.value for p in model.metadata_props}["source_format"] == "torchscript"


def test_module_path_from_exporter_scope_names() -> None:
    assert _module_path("/features/features.0/Conv") == "features.0"
    assert _module_path("/layer2/shortcut/shortcut.0/Conv") == "layer2.shortcut.0"
    assert _module_path("/layer1/relu_1/Relu") == "layer1.relu_1"
    assert _module_path("/Flatten") == "" and _module_path("Identity_0") == ""
    assert _module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"  # scopes carrying the whole path
    assert _module_path("/a/a.b/a.b.c/Conv") == "a.b.c"


def test_torchscript_shape_from_flag_overrides_stored_one() -> None:
    source = load(FIXTURES / "resnet_tiny.pt", input_shapes={None: (1, 3, 64, 64)})
    assert_equivalent(source, torch.jit.load(str(FIXTURES / "resnet_tiny.pt")), {"image": (1, 3, 64, 64)}, seeds=(0,))


def test_torchscript_without_shape_with_flag(made) -> None:
    source = load(made["script_noshape"], input_shapes={"image": SHAPE})
    assert_equivalent(source, torch.jit.load(str(made["script_noshape"])), {"image": SHAPE})


def test_export_archive_shapes_come_from_the_program() -> None:
    source = hub.adapters.load(FIXTURES / "tiny_cnn.pt2")
    assert_equivalent(source, torch.export.load(str(FIXTURES / "tiny_cnn.pt2")).module(), {"image": SHAPE})
    paths = {p.value for n in source.onnx_model.graph.node for p in n.metadata_props}
    assert {"features.0", "features.3", "classifier"} <= paths


def test_export_archive_dynamic_batch_becomes_one(made) -> None:
    source = load(made["dyn_batch"])
    assert [d.dim_value for d in source.onnx_model.graph.input[0].type.tensor_type.shape.dim] == list(SHAPE)
    assert_equivalent(source, torch.export.load(str(made["dyn_batch"])).module(), {"image": SHAPE})


def test_export_archive_dynamic_size_from_flag(made) -> None:
    source = load(made["dyn_hw"], input_shapes={None: (1, 3, 24, 40)})
    assert_equivalent(source, torch.export.load(str(made["dyn_hw"])).module(), {"image": (1, 3, 24, 40)})


@pytest.mark.parametrize("factory", [f"{MODELS_PY.relative_to(ROOT)}:TinyCNN", "fixtures.torch_models:tiny_cnn",
                                     str(MODELS_PY) + ":TinyCNN"])
def test_state_dict_with_factory(factory: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    source = hub.adapters.load(FIXTURES / "tiny_cnn_state.pth", LoadOptions(factory=factory, input_shapes={None: SHAPE}))
    assert_equivalent(source, trained_tiny_cnn(), {"image": SHAPE})


@pytest.mark.parametrize("key", ["legacy", "checkpoint"])
def test_state_dict_in_legacy_format_or_checkpoint_dict(made, key: str) -> None:
    source = load(made[key], factory=f"{MODELS_PY}:TinyCNN", input_shapes={None: SHAPE})
    assert_equivalent(source, trained_tiny_cnn(), {"image": SHAPE})


def test_pickled_module_with_trust(monkeypatch) -> None:
    monkeypatch.chdir(ROOT)  # the pickle names fixtures.torch_models.TinyCNN
    source = hub.adapters.load(FIXTURES / "tiny_cnn_pickled.pth", LoadOptions(trust_pickle=True, input_shapes={None: SHAPE}))
    ref = torch.load(FIXTURES / "tiny_cnn_pickled.pth", weights_only=False).eval()
    assert_equivalent(source, ref, {"image": SHAPE})
    assert {p.key: p.value for p in source.onnx_model.metadata_props}["source_format"] == "pickled module"


def test_trusted_checkpoint_dict_holding_a_module(tmp_path: Path) -> None:
    net = trained_tiny_cnn()
    torch.save({"epoch": 7, "model": net}, tmp_path / "ckpt.pth")
    with pytest.raises(InputError, match="--trust-pickle"):
        load(tmp_path / "ckpt.pth", input_shapes={None: SHAPE})
    source = load(tmp_path / "ckpt.pth", trust_pickle=True, input_shapes={None: SHAPE})
    assert_equivalent(source, net, {"image": SHAPE}, seeds=(0,))


def test_python_factory_file_as_model() -> None:
    """`hub convert fixtures/torch_models.py --factory trained_tiny_cnn --input-shape 1,3,32,32`."""
    source = hub.adapters.load(MODELS_PY, LoadOptions(factory="trained_tiny_cnn", input_shapes={None: SHAPE}))
    assert_equivalent(source, trained_tiny_cnn(), {"image": SHAPE})


def test_python_factory_given_as_path_colon_name() -> None:
    source = load(f"{MODELS_PY}:trained_tiny_cnn", input_shapes={None: SHAPE})
    assert_equivalent(source, trained_tiny_cnn(), {"image": SHAPE})


def test_path_colon_name_through_the_registry() -> None:
    """`hub check fixtures/torch_models.py:trained_tiny_cnn`: the registry routes it to PyTorch."""
    source = hub.adapters.load(f"{MODELS_PY}:trained_tiny_cnn", LoadOptions(input_shapes={None: SHAPE}))
    assert source.framework == "pytorch"
    assert_equivalent(source, trained_tiny_cnn(), {"image": SHAPE}, seeds=(0,))


def test_two_inputs_by_name_two_outputs(tmp_path: Path) -> None:
    torch.manual_seed(3)
    net = TwoInputNet().eval()
    torch.save(net.state_dict(), tmp_path / "two.pth")
    shapes = {"image": (1, 3, 16, 16), "extra": (1, 6)}
    source = load(tmp_path / "two.pth", factory=f"{MODELS_PY}:TwoInputNet", input_shapes=shapes)
    assert [o.name for o in source.onnx_model.graph.output] == ["output_0", "output_1"]
    assert source.source_layouts == {"image": "NCHW", "extra": None}
    assert_equivalent(source, net, shapes)


# -- each clear error -----------------------------------------------------------------------

def test_torchscript_without_stored_shape_names_the_flag(made) -> None:
    one_line_input_error(lambda: load(made["script_noshape"]), "--input-shape", "TorchScript does not record")


def test_export_archive_dynamic_size_without_flag(made) -> None:
    one_line_input_error(lambda: load(made["dyn_hw"]), "--input-shape", "dynamic")


def test_export_archive_shape_that_contradicts_the_program() -> None:
    one_line_input_error(lambda: load(FIXTURES / "tiny_cnn.pt2", input_shapes={None: (1, 3, 16, 16)}),
                         "does not match", "1x3x32x32")


def test_untrusted_pickle_says_why_and_what_to_pass() -> None:
    one_line_input_error(lambda: load(FIXTURES / "tiny_cnn_pickled.pth", input_shapes={None: SHAPE}),
                         "runs code", "--trust-pickle")


def test_trusted_pickle_whose_class_cannot_be_imported(tmp_path: Path) -> None:
    code = ("import sys, torch\nsys.path.insert(0, sys.argv[1])\nimport gone_net\n"
            "torch.save(gone_net.Net(), sys.argv[2])\n")
    (tmp_path / "gone_net.py").write_text("import torch\nclass Net(torch.nn.Linear):\n"
                                          "    def __init__(self):\n        super().__init__(4, 2)\n")
    (tmp_path / "sub").mkdir()
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "sub" / "net.pth")], check=True,
                   capture_output=True, timeout=120)
    (tmp_path / "gone_net.py").unlink()
    one_line_input_error(lambda: load(tmp_path / "sub" / "net.pth", trust_pickle=True, input_shapes={None: (1, 4)}),
                         "cannot be imported", "gone_net")


def test_state_dict_without_factory_names_the_flag() -> None:
    one_line_input_error(lambda: load(FIXTURES / "tiny_cnn_state.pth", input_shapes={None: SHAPE}),
                         "state_dict", "--factory")


def test_state_dict_that_does_not_fit_the_factory() -> None:
    one_line_input_error(lambda: load(FIXTURES / "tiny_cnn_state.pth", factory=f"{MODELS_PY}:ResNetTiny",
                                      input_shapes={None: SHAPE}), "does not fit", "missing", "unexpected")


def test_torch_save_of_something_else(made) -> None:
    one_line_input_error(lambda: load(made["a_list"], factory=f"{MODELS_PY}:TinyCNN"), "holds a list")


@pytest.mark.parametrize("factory, needle", [
    ("TinyCNN", "not module:function"),
    ("no/such/file.py:Net", "no such file"),
    ("fixtures/torch_models.py:Nope", "has no 'Nope'"),
    ("fixtures/torch_models.py:not_a_module", "returned a int"),
    ("fixtures/torch_models.py:CLASSES", "not a class or function"),
    ("no_such_module_xyz:net", "ModuleNotFoundError"),
])
def test_factory_errors(factory: str, needle: str, monkeypatch) -> None:
    monkeypatch.chdir(ROOT)
    one_line_input_error(lambda: load(FIXTURES / "tiny_cnn_state.pth", factory=factory, input_shapes={None: SHAPE}),
                         needle)


def test_factory_file_that_fails_to_import(made) -> None:
    one_line_input_error(lambda: load(made["raises_py"], factory="Net", input_shapes={None: SHAPE}),
                         "importing", "no GPU here")


def test_python_file_without_factory_names_the_flag() -> None:
    one_line_input_error(lambda: load(MODELS_PY, input_shapes={None: SHAPE}), "--factory NAME")


def test_factory_without_shape_names_the_flag() -> None:
    one_line_input_error(lambda: load(MODELS_PY, factory="TinyCNN"), "--input-shape", "'image'")


def test_wrong_shape_is_an_input_error() -> None:
    one_line_input_error(lambda: load(FIXTURES / "resnet_tiny.pt", input_shapes={None: (1, 3, 32)}),
                         "does not run on input shape image=1x3x32")


def test_unknown_input_name() -> None:
    one_line_input_error(lambda: load(FIXTURES / "resnet_tiny.pt", input_shapes={"pixels": SHAPE}),
                         "'pixels'", "'image'")


def test_unexportable_model_is_incompatible_in_one_line_naming_both_exporters(made) -> None:
    with pytest.raises(IncompatibleError) as info:
        load(made["eig_py"], factory="EigNet", input_shapes={None: (1, 4, 4)})
    line = info.value.one_line()
    assert "TorchScript-based exporter" in line and "dynamo exporter" in line and "linalg_eig" in line
    assert "\n" not in line and "\x1b" not in line



@pytest.mark.parametrize("key", ["truncated_resnet", "truncated_pt2", "truncated_state"])
def test_truncated_archive_is_one_line(made, key: str) -> None:
    one_line_input_error(lambda: hub.adapters.load(made[key], LoadOptions(factory=f"{MODELS_PY}:TinyCNN")),
                         "truncated or corrupt")


def test_corrupt_member_inside_an_intact_zip(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    with zipfile.ZipFile(FIXTURES / "resnet_tiny.pt") as src, zipfile.ZipFile(path, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info, b"\x00garbage" * 8 if info.filename.endswith("constants.pkl") else data)
    one_line_input_error(lambda: hub.adapters.load(path), "cannot read the TorchScript archive")


# -- through the CLI: one line on stderr, exit 2, no traceback ------------------------------

@pytest.mark.parametrize("args, needle", [
    (["fixtures/tiny_cnn_pickled.pth"], "--trust-pickle"),
    (["fixtures/tiny_cnn_state.pth"], "--factory"),
])
def test_cli_errors_are_one_line(args: list[str], needle: str) -> None:
    proc = run_hub("check", *args, "--input-shape", "1,3,32,32", cwd=ROOT)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("hub: error:")]
    assert len(lines) == 1 and needle in lines[0]
    assert "Traceback" not in proc.stderr
