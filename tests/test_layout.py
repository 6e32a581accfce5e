"""Inputs in the order firmware fills them (issue 27, hub.convert.layout): only an input whose axis 1 a
convolution reads as channels moves channels-last; a batch-first sequence keeps (batch, time, features), and
TFLM fed time-major data exactly as the settings header describes it matches the PyTorch model; an (N, T, F)
filterbank unsqueezed and transposed into a patch Conv (AST's front end) converts right."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from hub import api
from hub.convert.layout import decide_layouts
from hub.firmware.export import settings_header
from hub.tflite.model import read_tflite
from tests.conftest import small_cnn_onnx


class KeywordSpotter(nn.Module):
    """A recurrent keyword spotter over MFCC frames, batch-first as PyTorch users write it."""

    def __init__(self, cell: type[nn.Module] = nn.LSTM, hidden: int = 8):
        super().__init__()
        self.rnn = cell(10, hidden, batch_first=True)
        self.fc = nn.Linear(hidden, 12)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class FilterbankFrontEnd(nn.Module):
    """(N, T, F) -> unsqueeze -> transpose -> patch Conv2d, as AST embeds a filterbank."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(1, 8, 16, stride=10)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.patch(x.unsqueeze(1).transpose(2, 3)).flatten(2).transpose(1, 2)
        return self.fc(torch.relu(x).mean(1))


class Normalised(nn.Module):
    """An image input scaled before its first Conv: still read as channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv((x - 0.5) * 2.0)


def export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    torch.manual_seed(0)
    torch.onnx.export(module.eval(), (torch.zeros(shape),), str(path), input_names=["x"], output_names=["y"],
                      dynamo=False, opset_version=17)
    return path


def only_layout(path: Path):
    (layout,) = decide_layouts(onnx.load(str(path)))
    return layout


# --- the decision, on graphs -------------------------------------------------------------------------------

def test_a_batch_first_sequence_keeps_the_source_order_and_names_its_axes(tmp_path):
    for cell in (nn.LSTM, nn.GRU):
        layout = only_layout(export(KeywordSpotter(cell), (1, 49, 10), tmp_path / "kws.onnx"))
        assert not layout.moved and layout.tflite_shape == (1, 49, 10)
        assert layout.axes == ("batch", "time", "features")


def test_an_image_moves_channels_last_also_through_scaling(tmp_path):
    layout = decide_layouts(small_cnn_onnx())[0]
    assert layout.moved and layout.tflite_shape == (1, 16, 16, 3)
    assert layout.axes == ("batch", "height", "width", "channels") and "conv1" in layout.reason
    scaled = only_layout(export(Normalised(), (1, 3, 8, 8), tmp_path / "scaled.onnx"))
    assert scaled.perm == (0, 2, 3, 1)


def test_a_filterbank_into_a_transposed_conv_keeps_its_order_a_conv1d_input_moves(tmp_path):
    front = only_layout(export(FilterbankFrontEnd(), (1, 98, 40), tmp_path / "front.onnx"))
    assert not front.moved and front.tflite_shape == (1, 98, 40)
    whisper = only_layout(export(nn.Conv1d(40, 8, 3), (1, 40, 100), tmp_path / "whisper.onnx"))
    assert whisper.moved and whisper.tflite_shape == (1, 100, 40) and whisper.axes[-1] == "channels"


def test_the_header_names_the_axes_and_says_when_channels_moved(small_cnn_int8_tflite):
    tflite, reference = small_cnn_int8_tflite
    model = read_tflite(tflite.read_bytes())
    assert tuple(model.io_specs("inputs")[0]["shape"]) == (1, 16, 16, 3)  # an image still goes channels-last
    header = settings_header("cnn", model, 4096, layouts=decide_layouts(onnx.load(str(reference))))
    assert ('input "image": int8 (batch=1, height=16, width=16, channels=3): channels moved last from the '
            "source's (N, C, H, W); transpose the source's samples by (0, 2, 3, 1)") in header
    assert "(NHWC for images)" in settings_header("cnn", model, 4096)  # a .tflite hub did not convert
    keras = decide_layouts(onnx.load(str(reference)), {"image": "NHWC"})  # a Keras image, exported NCHW by hub
    assert ("(batch=1, height=16, width=16, channels=3), the Keras model's own NHWC order"
            in settings_header("cnn", model, 4096, layouts=keras))


# --- converted: what firmware feeds --------------------------------------------------------------------------

class SpotterAndFrontEnd(nn.Module):
    """Two inputs in one conversion (one onnx2tf run for both cases): MFCC frames into a batch-first LSTM, and a
    filterbank into AST's unsqueeze -> transpose -> patch Conv."""

    def __init__(self):
        super().__init__()
        self.spotter, self.front = KeywordSpotter(nn.LSTM), FilterbankFrontEnd()

    def forward(self, mfcc, fbank):
        return torch.cat([self.spotter(mfcc), self.front(fbank)], dim=1)


def header_constants(text: str) -> dict[str, str]:
    return dict(re.findall(r"(k\w+)(?:\[\d+\])? = ([^,;]+)[,;]", text))


def header_axes(header: str, name: str) -> tuple[list[str], tuple[int, ...] | None]:
    """An input's axis names and the transpose its description asks of the source's samples (None: none), read
    from the header's words alone: `input "mfcc": int8 (batch=1, time=49, features=10), in the source ...`."""
    line = re.search(rf'input "{name}": \w+ \(([^)]*)\)(.*)', header)
    assert line, f"the header does not describe input {name}"
    perm = re.search(r"transpose the source's samples by \(([\d, ]+)\)", line.group(2))
    return ([a.split("=")[0] for a in line.group(1).split(", ")],
            tuple(int(p) for p in perm.group(1).split(",")) if perm else None)


def tflm_run(tflite: bytes, samples: list[dict[str, np.ndarray]], header: str) -> np.ndarray:
    """Lay each source sample out as the header's description of its input says, quantize it into that input,
    invoke TFLM (Reset() before each sample, as the header asks of a stateful model), dequantize output 0: as
    firmware does, with nothing but the header's words and constants. One row per sample."""
    from tflite_micro import runtime  # why here: the interpreter only this test drives directly

    c = header_constants(header)
    interpreter = runtime.Interpreter.from_bytes(tflite, arena_size=int(c["kTensorArenaSize"]))
    inputs = re.findall(r"/\* Input(\d+): '(\w+)'", header)
    out_scale, out_zero = float(c["kOutput0Scale"].rstrip("f")), int(c["kOutput0ZeroPoint"])
    results = []
    for sample in samples:
        interpreter.reset()
        for index, name in inputs:
            _, perm = header_axes(header, name)
            x = sample[name].transpose(perm) if perm else sample[name]
            scale, zero = float(c[f"kInput{index}Scale"].rstrip("f")), int(c[f"kInput{index}ZeroPoint"])
            q = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8) if scale else x
            dims = [int(c[f"kInput{index}Dim{i}"]) for i in range(int(c[f"kInput{index}Rank"]))]
            interpreter.set_input(q.reshape(dims), int(index))  # reshape only: the order is the header's
        interpreter.invoke()
        out = interpreter.get_output(0).astype(np.float64)
        results.append((out - out_zero) * out_scale if out_scale else out)  # scale 0: a float32 model
    return np.array(results)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a), np.ravel(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def converted(folder: Path, module: nn.Module, shapes: dict[str, tuple[int, ...]], name: str,
              quantize: str = "int8") -> Path:
    """`module` exported and through `hub convert` (calibrated on normal samples), its output folder."""
    torch.manual_seed(0)
    torch.onnx.export(module.eval(), tuple(torch.zeros(s) for s in shapes.values()), str(folder / f"{name}.onnx"),
                      input_names=list(shapes), dynamo=False, opset_version=17)
    rng = np.random.default_rng(1)
    np.savez(folder / "calibration.npz", **{k: rng.standard_normal((40, *s[1:])).astype(np.float32)
                                             for k, s in shapes.items()})
    api.convert(folder / f"{name}.onnx", calibration=folder / "calibration.npz", out=folder / "out", name=name,
                schedule="default", quantize=quantize)  # the least-arena search measures on TFLM: time this test does not need
    return folder / "out"


def matches_source(module: nn.Module, out: Path, name: str, shapes: dict[str, tuple[int, ...]],
                   min_cosine: float = 0.99) -> str:
    """TFLM fed samples in the source's own order (a sequence frame after frame), as the header says, against
    the PyTorch module itself; returns the header."""
    header = (out / f"{name}_model_settings.h").read_text()
    tflite = (out / "model.tflite").read_bytes()
    rng = np.random.default_rng(7)
    samples = [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(4)]
    got = tflm_run(tflite, samples, header)
    with torch.no_grad():
        want = [module(*(torch.from_numpy(v) for v in sample.values())).numpy() for sample in samples]
    assert cosine(np.array(got), np.array(want)) >= min_cosine
    return header


SHAPES = {"mfcc": (1, 6, 10), "fbank": (1, 98, 40)}  # 6 frames: the unrolled LSTM's conversion grows with them


@pytest.fixture(scope="module")
def spotter(tmp_path_factory):
    torch.manual_seed(0)
    module = SpotterAndFrontEnd()
    return module, converted(tmp_path_factory.mktemp("spotter"), module, SHAPES, "spotter")


def test_tflm_fed_time_major_as_the_header_says_matches_the_pytorch_model(spotter):
    module, out = spotter
    header = matches_source(module, out, "spotter", SHAPES)
    assert 'input "mfcc": int8 (batch=1, time=6, features=10), in the source model\'s order (no transpose)' in header
    assert 'input "fbank": int8 (batch=1, axis 1=98, axis 2=40), in the source model\'s order' in header


def test_the_report_gives_the_axes(spotter):
    _, out = spotter
    layouts = {d["name"]: d for d in json.loads((out / "report.json").read_text())["model"]["input_layouts"]}
    assert layouts["mfcc"]["axes"] == ["batch", "time", "features"] and not layouts["mfcc"]["channels_moved_last"]
    assert layouts["fbank"]["shape"] == [1, 98, 40]
    assert "(batch=1, time=6, features=10), in the source model&#x27;s order" in (out / "report.html").read_text()


@pytest.mark.heavy
@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_time_major_feed_matches_a_49_frame_keyword_spotter(tmp_path, cell):
    torch.manual_seed(0)
    module, shapes = KeywordSpotter(cell, hidden=16), {"mfcc": (1, 49, 10)}
    matches_source(module, converted(tmp_path, module, shapes, "kws"), "kws", shapes)


@pytest.mark.heavy
def test_an_audio_spectrogram_transformer_converts_and_matches(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                    max_length=98, num_mel_bins=40, patch_size=16, frequency_stride=10,
                                    time_stride=10, num_labels=5)
    torch.manual_seed(0)
    model = transformers.ASTForAudioClassification(config).eval()
    embeddings = model.audio_spectrogram_transformer.embeddings
    with torch.no_grad():  # timm-style tables: transformers leaves them zero, a LayerNorm over a zero token is 0/0
        for table in (embeddings.cls_token, embeddings.distillation_token, embeddings.position_embeddings):
            table.normal_(0.0, 0.02)

    class Logits(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, fbank):
            return self.model(fbank).logits

    # float32: the conversion itself is exact now (onnx2tf moving the input: cosine 0.953). int8 of this random
    # 1-layer AST measured 0.958, diagnosed by hub as quantization (a LayerNorm RSQRT's range), not layout.
    module, shapes = Logits(), {"fbank": (1, 98, 40)}
    matches_source(module, converted(tmp_path, module, shapes, "ast", "float32"), "ast", shapes, 0.9999)
