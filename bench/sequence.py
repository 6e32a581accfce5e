"""Sequence models on TFLM: hub convert beside TensorFlow's converter on the same weights.

Models (input, what runs):
  kws_lstm / kws_gru   1x49x10 MFCCs, LSTM / GRU hidden 64, last step, Linear 12 (the trained fixtures)
  kws_bilstm           the same with a bidirectional LSTM (hidden 32 a direction)
  kws_lstm2            a 2-layer LSTM (hidden 64)
  conv_gru             Conv1d(10->32, k3) + ReLU over the MFCC frames, then GRU 64, Linear 12
  raw_cnn              a 1-D CNN over 16,000 raw samples (1x1x16000, M5-like: conv 80/4, pools)
  ast                  transformers' ASTForAudioClassification (small config) over a 1x98x40 filterbank
  ast_int16x8          the same AST through `hub convert --quantize int16x8` (int8's LayerNorms lose 4 % cosine)
hub: `hub convert SOURCE --target tflm --calibration ... --json` (int8; the source is the PyTorch model,
TorchScript for the fixtures, torch.export .pt2 otherwise), fidelity as hub reports it (against the source).
TensorFlow: the equivalent tf_keras model with the same weights (where one exists), TFLiteConverter
full-integer int8 in a child; measured on the same TFLM interpreter (hub.verify.tflm.verify: smallest arena,
host invoke time) and compared with the PyTorch source on the same held-out samples.

    .venv/bin/python bench/sequence.py [--models kws_lstm,kws_gru] [--render-only]
Writes bench/results/sequence.md and .json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fixtures.torch_models import synthetic_mfcc  # noqa: E402
from hub.tflite.model import read_tflite  # noqa: E402
from hub.verify.tflm import verify  # noqa: E402
from tests.hub_models import Logits  # noqa: E402

import _tflm_samples as tflm_samples  # noqa: E402  (bench/, the script's folder, is on sys.path)

RESULTS = ROOT / "bench" / "results"
CALIBRATION, HELD_OUT = 48, 16
TIMEOUT_S = 1800


# --- the source models --------------------------------------------------------------------------

class Recurrent(nn.Module):
    """MFCC frames [1, 49, 10] -> (Conv1d front) -> LSTM/GRU (batch_first) -> last step -> Linear 12."""

    def __init__(self, cell: str, hidden: int = 64, layers: int = 1, bidirectional: bool = False, conv: int = 0):
        super().__init__()
        self.conv = nn.Conv1d(10, conv, 3, padding=1) if conv else None
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(conv or 10, hidden, num_layers=layers, bidirectional=bidirectional, batch_first=True)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), 12)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(mfcc.transpose(1, 2))).transpose(1, 2) if self.conv is not None else mfcc
        y, _ = self.rnn(x)
        return self.fc(y[:, -1])


class RawCNN(nn.Module):
    """M5-like keyword spotter on 16,000 raw samples [1, 1, 16000]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv1d(1, 16, 80, stride=4), nn.ReLU(), nn.MaxPool1d(4),
                                  nn.Conv1d(16, 32, 3), nn.ReLU(), nn.MaxPool1d(4),
                                  nn.Conv1d(32, 64, 3), nn.ReLU(), nn.MaxPool1d(4),
                                  nn.Conv1d(64, 64, 3), nn.ReLU(), nn.AdaptiveAvgPool1d(1))
        self.fc = nn.Linear(64, 12)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(audio).flatten(1))


def ast_model() -> nn.Module:
    from transformers import ASTConfig, ASTForAudioClassification  # why here: only this model needs it

    config = ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                       patch_size=16, frequency_stride=12, time_stride=12, max_length=98, num_mel_bins=40,
                       num_labels=12)
    model = ASTForAudioClassification(config)
    with torch.no_grad():  # timm-style init (field notes): tokens and positions not left at zero
        emb = model.audio_spectrogram_transformer.embeddings
        for table in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            table.normal_(0, 0.02)
    return model


MODELS = {  # name -> (build, input shape, samples kind)
    "kws_lstm": (lambda: torch.jit.load(str(ROOT / "fixtures" / "kws_lstm.pt")), (1, 49, 10), "mfcc"),
    "kws_gru": (lambda: torch.jit.load(str(ROOT / "fixtures" / "kws_gru.pt")), (1, 49, 10), "mfcc"),
    "kws_bilstm": (lambda: Recurrent("lstm", 32, bidirectional=True), (1, 49, 10), "mfcc"),
    "kws_lstm2": (lambda: Recurrent("lstm", 64, layers=2), (1, 49, 10), "mfcc"),
    "conv_gru": (lambda: Recurrent("gru", 64, conv=32), (1, 49, 10), "mfcc"),
    "raw_cnn": (RawCNN, (1, 1, 16000), "audio"),
    "ast": (lambda: Logits(ast_model()), (1, 98, 40), "fbank"),
    "ast_int16x8": (lambda: Logits(ast_model()), (1, 98, 40), "fbank"),
}
HUB_ARGS = {"ast_int16x8": ["--quantize", "int16x8"]}  # a row of the same model converted with other hub options


def samples(kind: str, shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    if kind == "mfcc":
        return synthetic_mfcc(count, seed=seed)[0].numpy().astype(np.float32)
    rng = np.random.default_rng(seed)
    if kind == "audio":  # a few tones in noise, amplitude < 1
        t = np.arange(shape[-1]) / 16000
        tones = [sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(rng.uniform(100, 3000, 3), rng.uniform(0, 6, 3)))
                 for _ in range(count)]
        return (np.stack(tones)[:, None] * 0.2 + rng.normal(0, 0.05, (count, 1, shape[-1]))).astype(np.float32)
    return rng.normal(0, 1, (count, *shape[1:])).astype(np.float32)  # a normalised filterbank


def build_source(name: str, work: Path) -> tuple[Path, nn.Module, np.ndarray, np.ndarray]:
    build, shape, kind = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    calib, held = samples(kind, shape, CALIBRATION, 1000), samples(kind, shape, HELD_OUT, 2000)
    if name.startswith("kws_") and name in ("kws_lstm", "kws_gru"):
        path = ROOT / "fixtures" / f"{name}.pt"
    else:
        path = work / f"{name}.pt2"
        torch.export.save(torch.export.export(model, (torch.from_numpy(calib[:1]),)), str(path))
    return path, model, calib, held


# --- hub ------------------------------------------------------------------------------------------

def hub_run(source: Path, calib: np.ndarray, held: np.ndarray, expected: np.ndarray, work: Path,
            args: list[str]) -> dict:
    """hub convert (plus `args`), calibrated on calib + held (hub holds the last samples out for its own
    fidelity check)."""
    data = work / "calibration.npy"
    np.save(data, np.concatenate([calib, held]))
    out = work / "hub"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "convert", str(source), "--target", "tflm",
                           "--calibration", str(data), "--out", str(out), "--force", "--json", *args],
                          capture_output=True, text=True, errors="replace", cwd=ROOT, timeout=TIMEOUT_S,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {}
    if proc.returncode != 0 or "model" not in report:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("hub: error:")] or proc.stderr.splitlines()[-1:]
        return {"error": (lines[-1] if lines else f"exit {proc.returncode}")[:300], "wall_s": wall}
    paths = sorted({f"{r['op']} {r['path']}" for p in report["passes"] for r in p["rewrites"] if r.get("path")})
    got, invoke_us, _ = tflm_samples.run(out / "model.tflite", held, work)
    return {"ops": report["model"]["op_count"], "histogram": report["model"]["ops"],
            "size": report["model"]["tflite_bytes"], "arena": report["memory"]["arena_bytes"],
            "invoke_us": invoke_us, "convert_s": report["timings_s"]["convert"], "wall_s": wall,
            "cosine": report["fidelity"]["cosine"], "reference": report["fidelity"]["reference"],
            "cosine_bench_samples": cosine(expected, got), "rnn_path": ", ".join(paths) or "-"}


# --- TensorFlow's converter on the equivalent Keras model -----------------------------------------

def keras_weights(name: str, model: nn.Module) -> dict[str, np.ndarray] | None:
    """The torch weights by name, for the Keras twin built in the child; None: no Keras equivalent here."""
    if name.startswith("ast"):
        return None
    return {k.replace(".", "__"): v.detach().numpy() for k, v in model.state_dict().items()}


def _keras_model(name: str, w: dict[str, np.ndarray]):
    import tf_keras as K  # why here: TensorFlow only in the child

    def get(key: str) -> np.ndarray:
        return w[key.replace(".", "__")]

    def lstm(prefix: str, suffix: str, sequences: bool, backwards: bool = False):
        layer = K.layers.LSTM(get(f"{prefix}.weight_hh_{suffix}").shape[1], return_sequences=sequences,
                              go_backwards=backwards)
        return layer, [get(f"{prefix}.weight_ih_{suffix}").T, get(f"{prefix}.weight_hh_{suffix}").T,
                       get(f"{prefix}.bias_ih_{suffix}") + get(f"{prefix}.bias_hh_{suffix}")]

    def gru(prefix: str, sequences: bool):
        H = get(f"{prefix}.weight_hh_l0").shape[1]
        order = np.r_[H:2 * H, 0:H, 2 * H:3 * H]  # torch r, z, n -> Keras z, r, h
        layer = K.layers.GRU(H, return_sequences=sequences, reset_after=True)
        return layer, [get(f"{prefix}.weight_ih_l0")[order].T, get(f"{prefix}.weight_hh_l0")[order].T,
                       np.stack([get(f"{prefix}.bias_ih_l0")[order], get(f"{prefix}.bias_hh_l0")[order]])]

    def dense(prefix: str):
        return K.layers.Dense(get(f"{prefix}.weight").shape[0]), [get(f"{prefix}.weight").T, get(f"{prefix}.bias")]

    def conv(prefix: str, **kw):
        weight = get(f"{prefix}.weight")  # [out, in, k] -> [k, in, out]
        return K.layers.Conv1D(weight.shape[0], weight.shape[2], **kw), [weight.transpose(2, 1, 0), get(f"{prefix}.bias")]

    staged = []

    def apply(made, x):
        layer, weights = made
        y = layer(x)
        staged.append((layer, weights))
        return y

    last = K.layers.Lambda(lambda t: t[:, -1])
    if name == "raw_cnn":
        inp = K.Input((16000, 1), batch_size=1)
        x = inp
        for i, (index, pool) in enumerate(((0, 4), (3, 4), (6, 4), (9, 0))):
            x = K.layers.ReLU()(apply(conv(f"body.{index}", strides=4 if i == 0 else 1), x))
            x = K.layers.MaxPool1D(pool)(x) if pool else K.layers.GlobalAveragePooling1D()(x)
        out = apply(dense("fc"), x)
    else:
        inp = K.Input((49, 10), batch_size=1)
        x = inp
        if name == "conv_gru":
            x = K.layers.ReLU()(apply(conv("conv", padding="same"), x))
        if name in ("kws_gru", "conv_gru"):
            x = apply(gru("rnn", True), x)
        elif name == "kws_bilstm":
            forward, fw = lstm("rnn", "l0", True)
            backward, bw = lstm("rnn", "l0_reverse", True, backwards=True)
            layer = K.layers.Bidirectional(forward, backward_layer=backward)
            x = layer(x)
            staged.append((layer, fw + bw))
        else:
            for layer_index in range(2 if name == "kws_lstm2" else 1):
                x = apply(lstm("rnn", f"l{layer_index}", True), x)
        out = apply(dense("fc"), last(x))
    model = K.Model(inp, out)
    for layer, weights in staged:
        layer.set_weights(weights)
    return model


def _tf_child(name: str, weights: str, calibration: str, out: str) -> None:
    import tensorflow as tf  # why here: TensorFlow only in the child

    w = dict(np.load(weights))
    x = np.load(calibration)
    model = _keras_model(name, w)
    x = x.transpose(0, 2, 1) if name == "raw_cnn" else x  # Keras is channels-last
    np.save(Path(out).with_suffix(".float.npy"), model.predict(x, verbose=0))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(CALIBRATION))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    t0 = time.perf_counter()
    data = converter.convert()
    Path(out).with_suffix(".time").write_text(str(time.perf_counter() - t0))
    Path(out).write_bytes(data)


def tf_run(name: str, model: nn.Module, calib: np.ndarray, held: np.ndarray, expected: np.ndarray,
           work: Path) -> dict | None:
    weights = keras_weights(name, model)
    if weights is None:
        return None
    np.savez(work / "weights.npz", **weights)
    data = work / "tf_calibration.npy"
    np.save(data, np.concatenate([calib, held]))
    out = work / "tf.tflite"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--tf-child", name, str(work / "weights.npz"), str(data), str(out)],
                          capture_output=True, text=True, errors="replace", timeout=TIMEOUT_S,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not out.exists():
        lines = [ln.strip() for ln in proc.stderr.splitlines() if "Error" in ln] or proc.stderr.splitlines()[-1:]
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else (lines[-1][:200] if lines else "")
        return {"error": f"TF's converter failed ({why})", "wall_s": wall}
    keras_float = np.load(out.with_suffix(".float.npy"))[CALIBRATION:]
    tflite = out.read_bytes()
    verification = verify(tflite, None, None)
    got, invoke_us, _ = tflm_samples.run(out, held.transpose(0, 2, 1) if name == "raw_cnn" else held, work)
    model_ops = read_tflite(tflite)
    return {"ops": len(model_ops.ops), "histogram": model_ops.op_histogram(), "size": len(tflite),
            "arena": verification.memory.arena_bytes, "invoke_us": invoke_us,
            "convert_s": float(out.with_suffix(".time").read_text()), "wall_s": wall,
            "cosine": cosine(expected, got), "keras_vs_torch": cosine(expected, keras_float), "rnn_path": "-"}


def cosine(expected: np.ndarray, got: np.ndarray) -> float:
    e, g = expected.reshape(len(expected), -1), got.reshape(len(got), -1)
    return float(np.mean(np.sum(e * g, 1) / np.maximum(np.linalg.norm(e, axis=1) * np.linalg.norm(g, axis=1), 1e-30)))


# --- the table ------------------------------------------------------------------------------------

def measure(name: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-seq-{name}-") as tmp:
        work = Path(tmp)
        source, model, calib, held = build_source(name, work)
        with torch.no_grad():
            expected = np.concatenate([model(torch.from_numpy(held[i:i + 1])).numpy() for i in range(len(held))])
        print(f"{name}: hub convert ...", flush=True)
        row = {"model": name, "hub": hub_run(source, calib, held, expected, work, HUB_ARGS.get(name, []))}
        print(f"{name}: TensorFlow's converter ...", flush=True)
        row["tf"] = tf_run(name, model, calib, held, expected, work)
        print(json.dumps(row), flush=True)
        return row


def render(doc: dict) -> str:
    lines = ["# Sequence models on TFLM: hub convert vs TensorFlow's converter", "",
             f"`{doc['command']}` on {doc['date']} ({doc['machine']}; {doc['seconds']:.0f} s in all). int8 (a row named _int16x8: "
             "hub convert --quantize int16x8), the same TFLM interpreter for both (host build, reference kernels). Cosine: TFLM's dequantised output against "
             "the PyTorch SOURCE model on 16 held-out samples (hub: its own report, fidelity.reference = pytorch; "
             "TF: the same samples through the Keras twin's TFLite file). Convert: hub's convert stage (the "
             "converter child, TensorFlow's import included) / TF's `convert()` call alone.", "",
             "| model | converter | ops | file (B) | arena (B) | invoke (ms, host) | convert (s) | cosine vs source "
             "| RNN path |", "|---|---|---|---|---|---|---|---|---|"]
    for row in doc["rows"]:
        for who, key in (("hub", "hub"), ("TF (Keras twin)", "tf")):
            r = row.get(key)
            if r is None:
                lines.append(f"| {row['model']} | {who} | no Keras equivalent | | | | | | |")
            elif "error" in r:
                lines.append(f"| {row['model']} | {who} | {r['error']} | | | | | | |")
            else:
                lines.append(f"| {row['model']} | {who} | {r['ops']} | {r['size']:,} | {r['arena'] or 0:,} | "
                             f"{(r['invoke_us'] or 0) / 1000:.2f} | {r['convert_s']:.1f} | {r['cosine']:.5f} | "
                             f"{r['rnn_path']} |")
    lines += ["", "Ops by kind (hub):", ""]
    for row in doc["rows"]:
        r = row.get("hub") or {}
        if "histogram" in r:
            lines.append(f"- {row['model']}: " + ", ".join(f"{k} x{v}" for k, v in sorted(r["histogram"].items())))
    lines += ["", *doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--render-only", action="store_true")
    args, rest = parser.parse_known_args()
    if rest[:1] == ["--tf-child"]:
        _tf_child(*rest[1:5])
        return
    path = RESULTS / "sequence.json"
    if args.render_only:
        doc = json.loads(path.read_text())
    else:
        t0 = time.perf_counter()
        torch.set_num_threads(1)
        measured = {name: measure(name) for name in args.models.split(",")}
        old = json.loads(path.read_text()) if path.exists() else {}  # read after measuring: another run may have written
        kept = {row["model"]: row for row in old.get("rows", []) if row["model"] not in measured}
        rows = [measured.get(name) or kept[name] for name in MODELS if name in measured or name in kept]
        doc = {"command": ".venv/bin/python bench/sequence.py" + (f" --models {args.models}"
                                                                  if args.models != ",".join(MODELS) else ""),
               "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores shared",
               "seconds": time.perf_counter() - t0 + (old.get("seconds", 0) if kept else 0),
               "rows": rows, "notes": old.get("notes", [])}  # rows not measured now: kept from the last run
        path.write_text(json.dumps(doc, indent=1))
    (RESULTS / "sequence.md").write_text(render(doc))
    print(render(doc))


if __name__ == "__main__":
    main()
