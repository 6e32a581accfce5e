"""hub convert on the four MLPerf Tiny float models, side by side with their reference int8 files.

For each of ic, vww, kws, ad (../shared/mlperf_tiny):
  hub convert SOURCE --target tflm --input-range LO,HI      (synthetic calibration, range from the README)
then, for hub's int8 file and the reference int8 file alike:
- file size, op count and op histogram (hub.tflite_model.read_tflite);
- smallest TFLM arena, measured the same way for both (hub.verify: bisection on the real interpreter);
- TFLM invoke time on this machine: both models loaded in one child process, invoked in
  alternating order, median over rounds of the per-invoke time;
- fidelity against the float source (the adapter's ONNX, which issue 2's tests hold to the
  Keras model within 1e-4) on the same held-out synthetic inputs: cosine, max abs error,
  top-1 agreement for the classifiers.

    .venv/bin/python bench/mlperf_tiny.py [--models ic,vww,kws,ad] [--rounds 101] [--samples 64]
Writes bench/results/mlperf_tiny.md.
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Sources and input ranges (from ../shared/mlperf_tiny/README.md, read off the reference models'
# input quantisation) are shared with the convert-speed benchmark.
from bench.convert_speed import MLPERF, MLPERF_SOURCES as MODELS  # noqa: E402

CLASSIFIERS = {"ic", "vww", "kws"}  # ad is an autoencoder: top-1 means nothing there
HELD_OUT_SEED = 1234  # calibration uses seeds 0 and 1 (hub.calibration): these inputs are new to both files
TIME_GOAL = 1.05  # hub's invoke time may be at most 5 % above the reference's


def reference_path(name: str) -> Path:
    return MLPERF / name / "reference_int8.tflite"


def hub_convert(name: str, work: Path) -> tuple[bytes, dict, float]:
    """The real CLI, as a user runs it; returns the .tflite, report.json and wall seconds."""
    source, (lo, hi) = MODELS[name]
    out = work / f"{name}_tflm"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "convert", str(source), "--target", "tflm",
                           f"--input-range={lo},{hi}", "--out", str(out), "--force", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"hub convert {name} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
    return (out / "model.tflite").read_bytes(), json.loads((out / "report.json").read_text()), wall


def float_source(name: str):
    """The float model as the adapter brings it in (no graph passes), batch fixed to 1."""
    import adapters
    from hub.artifacts import LoadOptions
    from hub.normalise import normalise

    return normalise(adapters.load(MODELS[name][0], LoadOptions()).onnx_model, {}, passes=[]).onnx_model


def held_out_samples(model, value_range: tuple[float, float], count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(HELD_OUT_SEED)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input}
    return [{n: rng.uniform(*value_range, s).astype(np.float32) for n, s in shapes.items()} for _ in range(count)]


def measure(tflite_bytes: bytes, reference, samples) -> dict:
    """Size, ops, smallest arena and fidelity of one int8 file (arena and fidelity via hub.verify)."""
    from hub.tflite_model import read_tflite
    from hub.verify import verify

    model = read_tflite(tflite_bytes)
    check = verify(tflite_bytes, reference, samples)
    arena, probed = check.memory.get("arena_bytes"), False
    if arena is None and check.tflm.get("invokes"):
        arena, probed = bisect_arena(tflite_bytes), True
    return {"size": len(tflite_bytes), "ops": len(model.ops), "histogram": model.op_histogram(),
            "arena": arena, "arena_probed": probed, "fidelity": check.fidelity or {},
            "invokes": check.tflm.get("invokes")}


def bisect_arena(tflite_bytes: bytes) -> int:
    """Smallest arena by bisection with one child per trial (hub.verify.probe_arena).

    For files where hub.verify's one-child search dies: with per-channel FULLY_CONNECTED,
    some too-small arenas crash TFLM instead of failing the allocation.
    """
    from hub.verify import probe_arena

    lo, hi = 0, 16 * 1024
    while not probe_arena(tflite_bytes, hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if probe_arena(tflite_bytes, mid) else (mid, hi)
    return hi


# --- what-if: per-tensor FULLY_CONNECTED weights ------------------------------------------------

# TensorFlow 2.19's converter quantises FULLY_CONNECTED weights per channel; the reference files
# (older TF) have them per tensor. Per channel costs 12 bytes of flatbuffer per output channel for
# the weights and again for the bias, and TFLM keeps per-channel multipliers in the arena. This runs
# hub's own convert worker with TF's switch for it, to show what the missing option would give.
PER_TENSOR_DENSE_WORKER = (
    "import sys, hub.convert_worker as w\n"
    "configure = w._configure\n"
    "def per_tensor_dense(converter, tf, quantize, samples):\n"
    "    configure(converter, tf, quantize, samples)\n"
    "    converter._experimental_disable_per_channel_quantization_for_dense_layers = True\n"
    "w._configure = per_tensor_dense\n"
    "sys.exit(w.main(sys.argv[1]))\n"
)


def convert_per_tensor_dense(name: str, work: Path) -> bytes:
    """The same normalised graph and calibration as hub convert, through the worker with the switch on."""
    import adapters
    import onnx
    from hub.artifacts import LoadOptions
    from hub.calibration import build_calibration
    from hub.normalise import normalise

    source, value_range = MODELS[name]
    loaded = adapters.load(source, LoadOptions())
    normalised = normalise(loaded.onnx_model, {})
    calibration = build_calibration(normalised.inputs, None, value_range, loaded.source_layouts)
    job = work / f"{name}_per_tensor_dense"
    job.mkdir()
    onnx.save(normalised.onnx_model, str(job / "model.onnx"))
    np.savez(job / "calibration.npz", **calibration.samples)
    (job / "job.json").write_text(json.dumps({"quantize": "int8", "skip_onnxsim": True}))
    proc = subprocess.run([sys.executable, "-c", PER_TENSOR_DENSE_WORKER, str(job)], capture_output=True,
                          text=True, cwd=job, timeout=1800, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(f"per-tensor-dense conversion of {name} failed: {proc.stderr.strip()[-800:]}")
    return (job / "model.tflite").read_bytes()


# --- invoke timing (child process) ---------------------------------------------------------

def time_invokes(paths: list[Path], rounds: int) -> list[float]:
    """Median seconds per invoke of each model, all loaded in one child, in alternating order."""
    proc = subprocess.run([sys.executable, __file__, "--timing-child", str(rounds), *map(str, paths)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"timing child failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _timing_child(rounds: int, paths: list[str]) -> None:
    from tflite_micro import runtime

    rng = np.random.default_rng(0)
    interpreters = []
    for path in paths:
        interp = runtime.Interpreter.from_bytes(Path(path).read_bytes(), arena_size=4 * 1024 * 1024)
        details = interp.get_input_details(0)
        info = np.iinfo(details["dtype"])
        interp.set_input(rng.integers(info.min, info.max + 1, details["shape"]).astype(details["dtype"]), 0)
        interp.invoke()  # warm-up: first invoke touches the arena
        interpreters.append(interp)
    # Thread CPU time, not wall time: on a shared machine, waiting for a core is not the model's cost.
    # Repeats per round so one measurement lasts ~5 ms, the same count for every model.
    t0 = time.thread_time()
    interpreters[0].invoke()
    repeats = max(1, int(0.005 / max(time.thread_time() - t0, 1e-6)))
    samples: list[list[float]] = [[] for _ in paths]
    for r in range(rounds):
        order = range(len(paths)) if r % 2 == 0 else reversed(range(len(paths)))
        for i in order:
            t0 = time.thread_time()
            for _ in range(repeats):
                interpreters[i].invoke()
            samples[i].append((time.thread_time() - t0) / repeats)
    print(json.dumps([float(np.median(s)) for s in samples]))


# --- report --------------------------------------------------------------------------------

def compare(name: str, work: Path, rounds: int, count: int, what_if: set[str]) -> dict:
    from hub.tflite_model import read_tflite  # noqa: F401  (fail early if the stack is missing)

    hub_bytes, report, wall = hub_convert(name, work)
    reference = float_source(name)
    samples = held_out_samples(reference, MODELS[name][1], count)
    ours = measure(hub_bytes, reference, samples)
    ref = measure(reference_path(name).read_bytes(), reference, samples)
    hub_path = work / f"{name}_hub.tflite"
    hub_path.write_bytes(hub_bytes)
    ours["invoke_s"], ref["invoke_s"] = time_invokes([hub_path, reference_path(name)], rounds)
    passes = {p["name"]: p["detail"] for p in report.get("passes", []) if p.get("changed")}
    row = {"name": name, "hub": ours, "ref": ref, "convert_wall_s": wall, "passes": passes}
    if name in what_if:
        alt_bytes = convert_per_tensor_dense(name, work)
        row["per_tensor_dense"] = measure(alt_bytes, reference, samples)
        alt_path = work / f"{name}_ptd.tflite"
        alt_path.write_bytes(alt_bytes)
        row["per_tensor_dense"]["invoke_s"], row["ref_invoke_again_s"] = time_invokes([alt_path, reference_path(name)], rounds)
    return row


def goals(row: dict) -> list[str]:
    """The goals this model misses, each with the figures."""
    h, r = row["hub"], row["ref"]
    missed = []
    for key, label in (("size", "size"), ("arena", "arena"), ("ops", "op count")):
        if h[key] is None or r[key] is None or h[key] > r[key]:
            missed.append(f"{label} {_num(h[key])} > reference {_num(r[key])}")
    if h["invoke_s"] > r["invoke_s"] * TIME_GOAL:
        missed.append(f"invoke {h['invoke_s'] / r['invoke_s'] - 1:+.1%} vs reference (goal <= +5%)")
    cosine = h["fidelity"].get("cosine")
    if cosine is None or cosine < 0.99:
        missed.append(f"cosine {cosine} < 0.99")
    return missed


def _num(value) -> str:
    return "n/a" if value is None else f"{value:,}"


def _fid(f: dict, classifier: bool) -> str:
    top1 = f.get("top1_agreement") if classifier else None
    cos = f.get("cosine")
    err = f.get("max_abs_error")
    return (f"{cos:.4f}" if cos is not None else "n/a") + " / " + (f"{err:.4g}" if err is not None else "n/a") \
        + " / " + (f"{top1:.0%}" if top1 is not None else "-")


NOTES = [
    "## Why the goals that fail, fail",
    "",
    "- File size and arena of `ad` (and a few hundred bytes on the others): TensorFlow 2.19's converter, which "
    "`hub convert` runs after onnx2tf, quantises FULLY_CONNECTED weights per output channel; the reference files "
    "have them per tensor. Per channel adds a float scale and an int64 zero point per channel to the flatbuffer, "
    "for the weights and again for the bias (12 + 12 bytes x 1,672 channels = 40 KB in `ad`), and TFLM keeps "
    "per-channel multipliers and shifts in the arena. The graph itself now matches the reference op for op "
    "(the nine ADDs were BatchNorm left as Mul + Add; `fold_scale_shift` folds them). The what-if table shows "
    "that per-tensor FULLY_CONNECTED meets every goal on all four; it needs a convert option (a change in "
    "hub/convert_worker.py, not made here).",
    "- The reference files' fidelity on these inputs (kws cosine 0.32) says little about them: they were "
    "calibrated on real MFCC/log-mel/image data, and uniform noise over the whole input range drives their "
    "activations outside the ranges they were calibrated for. hub's files were calibrated on the same kind of "
    "noise they are tested on. Neither figure predicts accuracy on real data, which is not on this machine.",
    "",
]


def render(rows: list[dict], rounds: int, count: int, seconds: float) -> str:
    lines = [
        "# MLPerf Tiny: hub convert vs the reference int8 files",
        "",
        f"Written by `bench/mlperf_tiny.py --models {','.join(r['name'] for r in rows)} --rounds {rounds} "
        f"--samples {count}` ({seconds:.0f} s) on {platform.machine()} Python {platform.python_version()}, "
        "tflite-micro's host interpreter (reference kernels).",
        "",
        "hub: `hub convert SOURCE --target tflm --input-range LO,HI` on the trained float source, "
        "calibrated on 32 synthetic uniform samples over the README's input range (not real data). "
        "Reference: `reference_int8.tflite`, made by the MLPerf Tiny authors with TensorFlow's converter "
        "(real calibration data).",
        "",
        "| model | file bytes hub / ref | ops hub / ref | arena bytes hub / ref | invoke µs hub / ref (ratio) "
        "| vs float: cosine / max abs err / top-1, hub | same, ref | goals |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        h, r = row["hub"], row["ref"]
        missed = goals(row)
        lines.append(
            f"| {row['name']} | {_num(h['size'])} / {_num(r['size'])} | {h['ops']} / {r['ops']} "
            f"| {_num(h['arena'])}{'*' if h['arena_probed'] else ''} / {_num(r['arena'])}{'*' if r['arena_probed'] else ''} "
            f"| {h['invoke_s'] * 1e6:,.0f} / {r['invoke_s'] * 1e6:,.0f} ({h['invoke_s'] / r['invoke_s']:.3f}) "
            f"| {_fid(h['fidelity'], row['name'] in CLASSIFIERS)} | {_fid(r['fidelity'], row['name'] in CLASSIFIERS)} | {'met' if not missed else 'MISSED: ' + '; '.join(missed)} |")
    alt_rows = [row for row in rows if "per_tensor_dense" in row]
    if alt_rows:
        lines += ["", "## What if FULLY_CONNECTED weights were per tensor (as in the reference files)", "",
                  "Not what `hub convert` does today: the same normalised graph and calibration through hub's "
                  "convert worker with TensorFlow's `_experimental_disable_per_channel_quantization_for_dense_layers`"
                  " switched on (PER_TENSOR_DENSE_WORKER in bench/mlperf_tiny.py).", "",
                  "| model | file bytes / ref | ops / ref | arena bytes / ref | invoke µs / ref (ratio) "
                  "| cosine / max abs err / top-1 | goals |", "|---|---|---|---|---|---|---|"]
        for row in alt_rows:
            a, r = row["per_tensor_dense"], row["ref"]
            missed = goals({**row, "hub": a, "ref": {**r, "invoke_s": row["ref_invoke_again_s"]}})
            lines.append(
                f"| {row['name']} | {_num(a['size'])} / {_num(r['size'])} | {a['ops']} / {r['ops']} "
                f"| {_num(a['arena'])} / {_num(r['arena'])} "
                f"| {a['invoke_s'] * 1e6:,.0f} / {row['ref_invoke_again_s'] * 1e6:,.0f} "
                f"({a['invoke_s'] / row['ref_invoke_again_s']:.3f}) "
                f"| {_fid(a['fidelity'], row['name'] in CLASSIFIERS)} | {'met' if not missed else 'MISSED: ' + '; '.join(missed)} |")
    lines += ["", *NOTES]
    lines += ["## Op histograms", "", "| model | hub | reference |", "|---|---|---|"]
    for row in rows:
        fmt = lambda hist: ", ".join(f"{k} {v}" for k, v in sorted(hist.items()))  # noqa: E731
        lines.append(f"| {row['name']} | {fmt(row['hub']['histogram'])} | {fmt(row['ref']['histogram'])} |")
    lines += ["", "## Passes that changed the graph", ""]
    for row in rows:
        detail = "; ".join(f"{k}: {v}" for k, v in row["passes"].items()) or "none"
        lines.append(f"- {row['name']} (convert {row['convert_wall_s']:.0f} s wall): {detail}")
    lines += [
        "",
        "## How it is measured",
        "",
        "- Arena: `hub.verify`, the exact smallest `arena_size` with which the TFLM interpreter allocates and "
        "invokes, found by bisection; the same call for both files. `*`: hub.verify's search died in its child "
        "(TFLM crashed on a too-small arena), so the same bisection ran with one child per trial "
        "(`hub.verify.probe_arena`).",
        f"- Invoke time: both files loaded in one child process, {rounds} rounds in alternating order, each "
        "round times a fixed number of invokes (~5 ms) in thread CPU time (the machine is shared: time spent "
        "waiting for a core is not counted); the median per-invoke time is shown. Host x86 times with reference "
        "kernels, not a microcontroller's.",
        f"- Fidelity: {count} held-out inputs, uniform over the input range, seed {HELD_OUT_SEED} (calibration "
        "used other seeds); the float source is the adapter's ONNX of the Keras/SavedModel file, run in "
        "onnxruntime. Cosine is the mean per-sample cosine of the dequantised int8 output with the float output.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="ic,vww,kws,ad")
    parser.add_argument("--rounds", type=int, default=101)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--what-if", default="ic,vww,kws,ad", help="models to also convert with per-tensor FULLY_CONNECTED weights")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "mlperf_tiny.md"))
    args = parser.parse_args()
    t0 = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-mlperf-") as tmp:
        for name in args.models.split(","):
            print(f"{name}: converting and measuring", file=sys.stderr)
            rows.append(compare(name, Path(tmp), args.rounds, args.samples, set(args.what_if.split(","))))
    text = render(rows, args.rounds, args.samples, time.perf_counter() - t0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--timing-child":
        _timing_child(int(sys.argv[2]), sys.argv[3:])
    else:
        main()
