"""int8, int16x8 and `--quantize auto` side by side, measured on the TFLM interpreter against the SOURCE model.

Models nobody here wrote, from the one corpus of tests/hub_models.py (transformers' model classes from small configs
and keras.applications, weights shaped like trained ones, BatchNorm settled; saved in the format bench/model_hub.py
converts them from, calibrated on synthetic samples over the model's input range as a user without data would):
the ones whose int8 is poor on TFLM in bench/results/model_hub.md (LeViT, MobileNetV1/V2, MobileViT, PoolFormer,
EfficientNet), two where it is good (DeiT, wav2vec2), the Keras applications of issue 26, and the MLPerf Tiny four
(/work/shared/mlperf_tiny), where int8 is already good.

Every figure comes from one `hub convert --quantize auto` per model: its steps measure int8 and whole int16x8
first (same held-out samples, same TFLM run, the converter's operator order), then the mixes; a model whose int8
already meets the target gets int16x8 from its own `hub convert --quantize int16x8 --schedule default`.

    .venv/bin/python bench/mixed_precision.py [--models levit,ic] [--min-cosine 0.99]
        [--out bench/results/mixed_precision.md]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.convert_speed import MLPERF_SOURCES, add_output_args, recorded_run  # noqa: E402
from hub import api  # noqa: E402
from hub.artifacts import LoadOptions  # noqa: E402
from hub.errors import HubError  # noqa: E402
from hub.optimize.precision import DEFAULT_MIN_COSINE  # noqa: E402
from tests.hub_models import BY_NAME, hub_args, save  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
CORPUS = ("levit", "mobilenetv1", "mobilenetv2", "mobilevit", "poolformer", "efficientnet", "deit", "wav2vec2",
          "keras_mobilenetv2", "keras_resnet50", "keras_nasnetmobile")
MLPERF = tuple(MLPERF_SOURCES)
MODELS = (*CORPUS, *MLPERF)


def source(name: str, work: Path) -> tuple[Path, dict]:
    """(model path, hub convert keywords) for one benchmark model: the corpus model saved in its first format."""
    if name in MLPERF_SOURCES:
        path, (lo, hi) = MLPERF_SOURCES[name]
        return path, {"input_range": f"{lo},{hi}"}
    model = BY_NAME[name]
    fmt = model.formats[0]
    keywords = {"input_range": f"{model.input_range[0]},{model.input_range[1]}"}
    if "--input-shape" in hub_args(model, fmt):  # TorchScript carries no input shape
        keywords["options"] = LoadOptions(input_shapes={None: tuple(model.input_shape)})
    return save(model, fmt, work), keywords


def _figures(step: dict | None) -> dict | None:
    if step is None:
        return None
    return {k: step.get(k) for k in ("cosine", "top1_agreement", "tflite_bytes", "arena_bytes", "invoke_us_host")} | {
        "int16_ops": len(step.get("int16_ops", [])), "label": step["label"]}


def measure_one(name: str, work: Path, min_cosine: float | None = None) -> dict:
    path, keywords = source(name, work)
    target = {"min_cosine": min_cosine} if min_cosine is not None else {}  # else auto's default
    try:
        report = api.convert(path, quantize="auto", out=work / f"{name}_auto", force=True, **keywords, **target)
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
            "candidates": mixed["candidates"], "note": mixed["note"], "ranking": mixed["ranking"],
            "refused": mixed["refused"]}


def measure(models: list[str], min_cosine: float | None = None) -> dict:
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-mixed-") as tmp:
        for name in models:
            print(f"== {name}", flush=True)
            rows.append(measure_one(name, Path(tmp), min_cosine))
            print("ROW " + json.dumps(rows[-1]), flush=True)  # a long run's figures survive an interruption
    return {"rows": rows, "min_cosine": min_cosine}


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _chosen(step: dict, candidates: int) -> str:
    if step["int16_ops"]:
        return f"{step['label']}: {step['int16_ops']} int16 ops ({candidates} compute twins)"
    return step["label"]


def render(run: dict) -> str:
    target = run.get("min_cosine") or DEFAULT_MIN_COSINE
    lines = ["# int8, int16x8 and --quantize auto, measured on TFLM against the source", "",
             f"`{run['command']}` ({run['date']}, {run['seconds']:.0f} s). Cosine and top-1 agreement against the "
             "source model (the Keras model, the PyTorch module, onnxruntime for an ONNX source) on the 8 held-out "
             "synthetic samples (32 calibrate) over the model's input range; file = .tflite bytes; arena = smallest TFLM "
             "arena in the converter's operator order; invoke = host CPU time per invoke. auto's target: cosine "
             f">= {target:g}, or near int16x8's own when int16x8 stays below {target:g}. int16x8: auto's own "
             "whole-model step (ops with no 16x8 version left float32, named in the notes) when int8 misses, else "
             "`hub convert --quantize int16x8`.", "",
             "| model | int8 cos | int8 top1 | int16x8 cos | int16x8 top1 | auto cos | auto top1 | auto: chosen | "
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
                     f"{_chosen(c, row['candidates'])} | {trio('tflite_bytes', ',')} | "
                     f"{trio('arena_bytes', ',')} | {trio('invoke_us_host', ',.0f')} |")
    notes = [f"- {row['model']}: {row['note']}" for row in run["rows"] if row.get("note")]
    missing = [m for m in MODELS if m not in {row["model"] for row in run["rows"]}]
    if missing:
        notes.append(f"- not measured in this run: {', '.join(missing)}")
    notes += [f"- {row['model']}: '-' for a mix = it did not invoke on TFLM" for row in run["rows"]
              if any(s["cosine"] is None for s in row.get("steps", []))]
    notes += [f"- {row['model']}: int16x8 = {row['int16x8']['label']}; in auto's mixes such an op, when promoted, "
              "runs in float32 between DEQUANTIZE and QUANTIZE (TFLM has no int16 kernel for it)" for row in run["rows"]
              if "float32" in (row.get("int16x8") or {}).get("label", "")]
    notes += [f"- {row['model']}: {row['int16x8']['label']}" for row in run["rows"]
              if (row.get("int16x8") or {}).get("label", "").startswith("int16x8 failed")]
    notes += [f"- {note}" for note in run.get("notes", [])]  # what the run's operator wrote down beside the figures
    notes += [f"- {row['model']}: TFLM refused the int16 twins of {', '.join(row['refused'])}: left int8"
              for row in run["rows"] if row.get("refused")]
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
    parser.add_argument("--min-cosine", type=float, help="auto's target (default: hub's, 0.99)")
    add_output_args(parser, ROOT / "bench" / "results" / "mixed_precision.md")
    args = parser.parse_args()
    run = recorded_run(args, "bench/mixed_precision.py", lambda: measure(args.models.split(","), args.min_cosine))
    Path(args.out).write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
