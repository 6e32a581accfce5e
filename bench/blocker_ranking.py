"""Which ONNX ops block TFLM in real models: `hub check --json` over the onnx light zoo, MLPerf Tiny, the fixtures and the torchvision-style
networks of bench/zoo_torch.py (random weights, exported at 1x3x96x96 like hub's PyTorch adapter),
counting each blocking (severity "error") op once per model: with --no-rewrite (what the graph
holds) and with hub's rewrite rules (what still blocks).

    .venv/bin/python bench/blocker_ranking.py [--out bench/results/blocker_ranking.md]
"""
from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
MLPERF = Path("/work/shared/mlperf_tiny")


def export_torch(folder: Path) -> list[Path]:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from zoo_torch import MODELS

    paths = []
    for name, make in MODELS.items():
        torch.manual_seed(0)
        buffer = io.BytesIO()
        torch.onnx.export(make().eval(), (torch.rand(1, 3, 96, 96),), buffer, dynamo=False, opset_version=17,
                          input_names=["input"], do_constant_folding=True)
        paths.append(folder / f"{name}.onnx")
        paths[-1].write_bytes(buffer.getvalue())
    return paths


def models(folder: Path) -> list[tuple[Path, list[str]]]:
    found = [(p, []) for p in sorted(LIGHT.glob("*.onnx"))]
    found += [(MLPERF / "ic/resnet8.h5", []), (MLPERF / "vww/mobilenet_v1_025.h5", []),
              (MLPERF / "kws/ds_cnn_savedmodel", []), (MLPERF / "ad/autoencoder.h5", [])]
    found += [(ROOT / "fixtures" / f, []) for f in ("tiny_cnn.onnx", "keras_cnn.keras", "keras_dense.h5")]
    found += [(ROOT / "fixtures/resnet18_128.pt", ["--input-shape", "1,3,128,128"])]
    return found + [(p, []) for p in export_torch(folder)]


def blockers(path: Path, extra: list[str]) -> tuple[list[tuple[str, str]], str]:
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "check", str(path), "--json", *extra],
                          capture_output=True, text=True, cwd=ROOT)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return [], (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return sorted({(f["op"], f["message"]) for f in report["findings"] if f["severity"] == "error"}), ""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench/results/blocker_ranking.md"))
    args = parser.parse_args()
    by_op: dict[str, set[str]] = defaultdict(set)
    after: dict[str, set[str]] = defaultdict(set)
    messages: dict[str, str] = {}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path, extra in models(Path(tmp)):
            name = path.stem if path.suffix else path.name
            found, failure = blockers(path, [*extra, "--no-rewrite"])
            left, _ = blockers(path, extra)
            for op, message in found:
                by_op[op].add(name)
                messages.setdefault(op, message)
            for op, _ in left:
                after[op].add(name)
            shown = [", ".join(sorted({op for op, _ in f})) or "-" for f in (found, left)]
            rows.append(f"| {name} | {failure or shown[0]} | {shown[1]} |")
    ranking = [f"| {op} | {len(names)} | {len(after[op])} | {', '.join(sorted(names))} | {messages[op]} |"
               for op, names in sorted(by_op.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    Path(args.out).write_text("\n".join([
        "# What blocks TFLM in real models", "", f"`.venv/bin/python bench/blocker_ranking.py`: {len(rows)} models, "
        "`hub check --json` with --no-rewrite and with the rewrite rules; blocking (error) findings counted once "
        "per model.", "",
        "| ONNX op | models | after rewrites | which | hub check's message (first seen) |", "|---|---|---|---|---|",
        *ranking, "", "| model | blocking ops | after rewrites |", "|---|---|---|", *rows, ""]))


if __name__ == "__main__":
    main()
