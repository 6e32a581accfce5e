"""int8, int16x8 and `--quantize auto` side by side, measured on the TFLM interpreter against the SOURCE model.

Models nobody here wrote, with realistic random weights:
- Keras applications with settled BatchNorm (weights=None, then one training-mode pass with momentum 0 so the
  moving statistics are the activations' own): ResNet50, NASNetMobile, MobileNetV2-0.35, small inputs;
- transformers' model classes from small configs (their own init: std-0.02 weights, tokens and position
  tables): DeiT (4 layers, dim 96), MobileViT, MobileNetV2-0.35, MobileNetV1-0.25, a tiny wav2vec2;
- the MLPerf Tiny four (/work/shared/mlperf_tiny), where int8 is already good.

Every figure comes from one `hub convert --quantize auto` per model: its steps measure int8 and whole int16x8
first (same held-out samples, same TFLM run, the converter's operator order), then the mixes; a model whose int8
already meets the target gets int16x8 from its own `hub convert --quantize int16x8 --schedule default`.

    .venv/bin/python bench/mixed_precision.py [--models deit,ic] [--out bench/results/mixed_precision.md]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.convert_speed import MLPERF_SOURCES, add_output_args, recorded_run  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SAMPLES = 60  # calibration .npz: hub holds out a fifth (12) for the fidelity figures
KERAS = {"keras_resnet50": ("ResNet50", 64, {}), "keras_nasnetmobile": ("NASNetMobile", 64, {}),
         "keras_mobilenetv2_035": ("MobileNetV2", 96, {"alpha": 0.35})}
TORCH = ("deit", "mobilevit", "hf_mobilenetv2_035", "hf_mobilenetv1_025", "wav2vec2")
MLPERF = tuple(MLPERF_SOURCES)
MODELS = (*KERAS, *TORCH, *MLPERF)


def keras_model(name: str, work: Path) -> tuple[Path, np.ndarray]:
    """A Keras application, BatchNorm settled on the samples it is then calibrated and measured with."""
    import keras

    arch, size, kwargs = KERAS[name]
    model = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3), **kwargs)
    x = np.random.default_rng(0).uniform(-1, 1, (SAMPLES, size, size, 3)).astype(np.float32)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:
        layer.momentum = 0.0  # one training pass sets the moving statistics to the batch's own
    model(x[:32], training=True)
    for layer in norms:
        layer.momentum = 0.99
    path = work / f"{name}.keras"
    model.save(path)
    return path, x


def _hf(name: str):
    import transformers as t

    if name == "deit":
        config = t.DeiTConfig(image_size=64, patch_size=8, hidden_size=96, num_hidden_layers=4, num_attention_heads=3,
                              intermediate_size=384, num_labels=10)
        return t.DeiTForImageClassification(config), (3, 64, 64)
    if name == "mobilevit":
        config = t.MobileViTConfig(image_size=64, num_labels=10, hidden_sizes=[64, 80, 96], expand_ratio=2.0,
                                   neck_hidden_sizes=[16, 16, 24, 48, 64, 80, 320])  # mobilevit-xx-small
        return t.MobileViTForImageClassification(config), (3, 64, 64)
    if name == "hf_mobilenetv2_035":
        return t.MobileNetV2ForImageClassification(t.MobileNetV2Config(depth_multiplier=0.35, image_size=96,
                                                                       num_labels=10)), (3, 96, 96)
    if name == "hf_mobilenetv1_025":
        return t.MobileNetV1ForImageClassification(t.MobileNetV1Config(depth_multiplier=0.25, image_size=96,
                                                                       num_labels=10)), (3, 96, 96)
    config = t.Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                              conv_dim=(32, 32, 32), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
                              num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=4,
                              do_stable_layer_norm=True, feat_extract_norm="layer")
    return t.Wav2Vec2ForSequenceClassification(config), (4000,)


def torch_model(name: str, work: Path) -> tuple[Path, np.ndarray]:
    """A transformers model class from a small config, exported with torch.export (logits out)."""
    import torch

    torch.manual_seed(0)
    model, shape = _hf(name)
    model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).logits

    x = np.random.default_rng(0).standard_normal((SAMPLES, *shape)).astype(np.float32)
    if name == "wav2vec2":
        x *= 0.1
    path = work / f"{name}.pt2"
    torch.export.save(torch.export.export(Logits(model).eval(), (torch.from_numpy(x[:1]),)), str(path))
    return path, x


def source(name: str, work: Path) -> tuple[Path, dict]:
    """(model path, hub convert keywords) for one benchmark model; calibration samples written beside it."""
    if name in MLPERF_SOURCES:
        path, (lo, hi) = MLPERF_SOURCES[name]
        return path, {"input_range": f"{lo},{hi}"}
    path, x = keras_model(name, work) if name in KERAS else torch_model(name, work)
    calibration = work / f"{name}_calibration.npy"
    np.save(calibration, x)
    return path, {"calibration": str(calibration)}


def _figures(step: dict | None) -> dict | None:
    if step is None:
        return None
    return {k: step.get(k) for k in ("cosine", "top1_agreement", "tflite_bytes", "arena_bytes", "invoke_us_host")} | {
        "int16_ops": len(step.get("int16_ops", [])), "label": step["label"]}


def measure_one(name: str, work: Path) -> dict:
    from hub import api
    from hub.errors import HubError

    path, keywords = source(name, work)
    try:
        report = api.convert(path, quantize="auto", out=work / f"{name}_auto", force=True, **keywords)
    except HubError as exc:
        return {"model": name, "error": str(exc)}
    mixed = report.mixed_precision.to_dict()
    steps = mixed["steps"]
    int16 = next((s for s in steps if s["promoted_compute"] == -1), None)
    if int16 is None:  # int8 met the target: whole int16x8 measured on its own
        try:
            other = api.convert(path, quantize="int16x8", schedule="default", out=work / f"{name}_int16x8",
                                force=True, **keywords).to_dict()
            fidelity = other["fidelity"]
            int16 = {"label": "int16x8", "cosine": fidelity["cosine"], "top1_agreement": fidelity["top1_agreement"],
                     "tflite_bytes": other["model"]["tflite_bytes"], "arena_bytes": other["memory"]["arena_bytes"],
                     "invoke_us_host": other["tflm"].get("invoke_us_host")}
        except HubError as exc:
            int16 = {"label": f"int16x8 failed: {exc}"}
    return {"model": name, "int8": _figures(steps[0]), "int16x8": _figures(int16), "auto": _figures(mixed["chosen"]),
            "steps": [_figures(s) | {"score": s["score"]} for s in steps], "reachable": mixed["reachable"],
            "candidates": mixed["candidates"], "note": mixed["note"], "ranking": mixed["ranking"]}


def measure(models: list[str]) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-mixed-") as tmp:
        for name in models:
            print(f"== {name}", flush=True)
            rows.append(measure_one(name, Path(tmp)))
            print("ROW " + json.dumps(rows[-1]), flush=True)  # a long run's figures survive an interruption
    return {"rows": rows}


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def render(run: dict) -> str:
    lines = ["# int8, int16x8 and --quantize auto, measured on TFLM against the source", "",
             f"`{run['command']}` ({run['date']}, {run['seconds']:.0f} s). Cosine and top-1 agreement against the "
             "source model (Keras or PyTorch) on 12 held-out samples (MLPerf Tiny: 8 synthetic ones); file = .tflite bytes; arena = smallest TFLM "
             "arena in the converter's operator order; invoke = host CPU time per invoke. auto's target: cosine "
             ">= 0.99, or near int16x8's own when int16x8 stays below 0.99.", "",
             "| model | int8 cos | int8 top1 | int16x8 cos | int16x8 top1 | auto cos | auto top1 | auto int16 ops | "
             "file int8 / 16x8 / auto | arena int8 / 16x8 / auto | invoke us int8 / 16x8 / auto |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in run["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | failed: {row['error']} |" + " |" * 9)
            continue
        a, b, c = row["int8"], row["int16x8"] or {}, row["auto"]
        trio = lambda key, fmt: " / ".join(_num(x.get(key), fmt) for x in (a, b, c))  # noqa: E731
        lines.append(f"| {row['model']} | {_num(a['cosine'], '.4f')} | {_num(a['top1_agreement'], '.2f')} | "
                     f"{_num(b.get('cosine'), '.4f')} | {_num(b.get('top1_agreement'), '.2f')} | "
                     f"{_num(c['cosine'], '.4f')} | {_num(c['top1_agreement'], '.2f')} | "
                     f"{c['int16_ops']} of {row['candidates']} | {trio('tflite_bytes', ',')} | "
                     f"{trio('arena_bytes', ',')} | {trio('invoke_us_host', ',.0f')} |")
    notes = [f"- {row['model']}: {row['note']}" for row in run["rows"] if row.get("note")]
    missing = [m for m in MODELS if m not in {row["model"] for row in run["rows"]}]
    if missing:
        notes.append(f"- not measured in this run: {', '.join(missing)}")
    notes += [f"- {row['model']}: '-' for a mix = it did not invoke on TFLM" for row in run["rows"]
              if any(s["cosine"] is None for s in row.get("steps", []))]
    if notes:
        lines += ["", "Notes:", *notes]
    lines += ["", "auto's steps (each a mix measured on TFLM: label, cosine, arena):", ""]
    for row in run["rows"]:
        if "steps" in row and len(row["steps"]) > 1:
            lines.append(f"- {row['model']}: " + "; ".join(
                f"{s['label']} {_num(s['cosine'], '.4f')} {_num(s['arena_bytes'], ',')} B" for s in row["steps"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    add_output_args(parser, ROOT / "bench" / "results" / "mixed_precision.md")
    args = parser.parse_args()
    run = recorded_run(args, "bench/mixed_precision.py", lambda: measure(args.models.split(",")))
    Path(args.out).write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
