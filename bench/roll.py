"""An unrolled int8 GRU beside the same model rolled into a WHILE loop (hub.tflite.roll), on TFLM.

One conversion per model through hub's own stages (normalise, the unroll_rnn rewrite, the real converter, the
flatbuffer passes, the least-arena schedule: the unrolled model as hub shipped it before the roll),
then the roll pass on the same flatbuffer. Both are measured side by side on the same TFLM interpreter: ops (all
subgraphs), file, smallest arena (hub.verify.tflm.verify's bisection) and where it goes (TFLM's recording
allocator: `print_allocations()`), host invoke time, int8 cosine against the PyTorch source on held-out samples.

Models:
  kws_gru   fixtures/kws_gru.pt (TorchScript, trained): 1x49x10 MFCCs, GRU 64, last step, Linear 12; calibrated on
            fixtures/kws_mfcc.npz
  gru8      a random GRU over 1x8x4 (hidden 8, Linear 3), synthetic calibration: a short sequence

    .venv/bin/python bench/roll.py [--models kws_gru,gru8]
Writes bench/results/roll.md and .json.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hub.convert.calibration import build_calibration  # noqa: E402
from hub.convert.converter import ConvertOptions, convert  # noqa: E402
from hub.graph.normalise import normalise  # noqa: E402
from hub.graph.rewrite import rewrite  # noqa: E402
from hub.tflite import roll, schedule  # noqa: E402
from hub.tflite.model import read_tflite  # noqa: E402
from hub.tflite.passes import run_passes  # noqa: E402
from hub.verify.tflm import verify  # noqa: E402

import _tflm_samples as tflm_samples  # noqa: E402  (bench/, the script's folder, is on sys.path)

RESULTS = ROOT / "bench" / "results"
ALLOCATION = re.compile(r"'([^']+)' used (\d+) bytes")
TOTAL = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


class Gru(nn.Module):
    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.rnn, self.fc = nn.GRU(features, hidden, batch_first=True), nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(x)[0][:, -1])


def source(name: str) -> tuple[nn.Module, tuple[int, ...], str | None]:
    if name == "kws_gru":
        return torch.jit.load(str(ROOT / "fixtures" / "kws_gru.pt")).eval(), (1, 49, 10), \
            f"{ROOT / 'fixtures' / 'kws_mfcc.npz'}:mfcc"
    torch.manual_seed(0)
    return Gru(4, 8, 3).eval(), (1, 8, 4), None


def unrolled(module: nn.Module, shape: tuple[int, ...], calibration: str | None):
    """The converter's flatbuffer after hub's passes but the roll, scheduled as hub ships it; the held-out samples."""
    buffer = io.BytesIO()
    torch.onnx.export(module, (torch.zeros(shape),), buffer, dynamo=False, opset_version=17, input_names=["x"])
    normalised = normalise(onnx.load_from_string(buffer.getvalue()), {})
    samples = build_calibration(normalised.inputs, calibration)
    graph = rewrite(normalised, samples.samples, "int8")
    tflite_bytes = convert(graph, samples, ConvertOptions("tflm", "int8")).tflite_bytes
    return run_passes(tflite_bytes)[0], samples.held_out_samples()


def measure(tflite_bytes: bytes, module: nn.Module, held_out: list[dict], work: Path) -> dict:
    path = work / "model.tflite"
    path.write_bytes(tflite_bytes)
    x = np.concatenate([s["x"] for s in held_out])
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    got, invoke_us, printed = tflm_samples.run(path, x, work, allocations=True)
    model = read_tflite(tflite_bytes)
    histogram = model.op_histogram()
    got = got.reshape(len(got), -1)
    cos = np.sum(expected * got, 1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    return {"ops": sum(histogram.values()), "histogram": histogram, "subgraphs": model.subgraphs,
            "tensors": len(model.tensors), "file": len(tflite_bytes),
            "arena": verify(tflite_bytes, None, None).memory.arena_bytes,
            "invoke_us": invoke_us, "cosine": float(np.mean(cos)), "allocations": _allocations(printed)}


def _allocations(text: str) -> dict[str, int]:
    found = {k: int(v) for k, v in TOTAL.findall(text)}
    found.update({k: int(v) for k, v in ALLOCATION.findall(text)})
    return found


def run(name: str) -> dict:
    module, shape, calibration = source(name)
    with tempfile.TemporaryDirectory(prefix=f"bench-roll-{name}-") as tmp:
        t0 = time.perf_counter()
        flat, held_out = unrolled(module, shape, calibration)
        flat = schedule.run(flat, lambda data: verify(data, None, None).memory)[0]
        convert_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rolled, result = roll.roll(flat)
        roll_s = time.perf_counter() - t0
        rows = {}
        for kind, data in (("unrolled", flat), ("rolled", rolled)):
            work = Path(tmp, kind)
            work.mkdir()
            rows[kind] = measure(data, module, held_out, work)
    return {"model": name, "shape": list(shape), "steps": result.steps, "total_steps": result.total_steps,
            "convert_s": convert_s, "roll_s": roll_s, **rows}


ROWS = (("ops (all subgraphs)", lambda r: f"{r['ops']}"), ("tensors (main subgraph)", lambda r: f"{r['tensors']}"),
        ("file (B)", lambda r: f"{r['file']:,}"), ("arena, smallest (B)", lambda r: f"{r['arena']:,}"),
        ("recorded total (B)", lambda r: f"{r['allocations'].get('total', 0):,}"),
        ("  node + registration structs", lambda r: f"{r['allocations'].get('NodeAndRegistration struct', 0):,}"),
        ("  eval tensors", lambda r: f"{r['allocations'].get('TfLiteEvalTensor data', 0):,}"),
        ("  op runtime data (persistent buffers)", lambda r: f"{r['allocations'].get('Persistent buffer data', 0):,}"),
        ("  activations (head)", lambda r: f"{r['allocations'].get('head', 0):,}"),
        ("invoke (ms, host)", lambda r: f"{r['invoke_us'] / 1000:.2f}"),
        ("int8 cosine vs PyTorch", lambda r: f"{r['cosine']:.5f}"))


def render(results: list[dict], command: str, seconds: float) -> str:
    lines = ["# GRU: unrolled vs rolled into a TFLM WHILE loop (hub.tflite.roll)", "",
             f"`{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC ({platform.machine()}, 2 cores shared; "
             f"{seconds:.0f} s in all). The same converted flatbuffer before and after the roll pass, on the same TFLM "
             "interpreter (host build, reference kernels). Arena: the smallest that loads and invokes (bisection); the "
             "recorded total is TFLM's recording allocator at a large arena (print_allocations), without the memory "
             "planner's scratch, which the smallest arena includes.", ""]
    for r in results:
        lines += [f"## {r['model']} (input {'x'.join(map(str, r['shape']))}): {r['steps']} of {r['total_steps']} "
                  f"steps rolled", "", "| | unrolled | rolled |", "|---|---|---|"]
        lines += [f"| {label} | {cell(r['unrolled'])} | {cell(r['rolled'])} |" for label, cell in ROWS]
        lines += ["", f"- ops, unrolled: {_ops(r['unrolled'])}", f"- ops, rolled: {_ops(r['rolled'])}",
                  f"- conversion (stages + schedule) {r['convert_s']:.0f} s; the roll pass {r['roll_s']:.2f} s", ""]
    return "\n".join(lines)


def _ops(row: dict) -> str:
    return ", ".join(f"{k} x{v}" for k, v in row["histogram"].items())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="kws_gru,gru8")
    args = parser.parse_args()
    t0 = time.perf_counter()
    results = [run(name) for name in args.models.split(",")]
    command = ".venv/bin/python bench/roll.py" + (f" --models {args.models}" if args.models != "kws_gru,gru8" else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "roll.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "roll.md").write_text(render(results, command, time.perf_counter() - t0))
    print((RESULTS / "roll.md").read_text())


if __name__ == "__main__":
    main()
