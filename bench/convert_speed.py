"""hub convert vs the plain onnx2tf CLI, side by side in one run.

For each model (fixtures/*.onnx as they are; the PyTorch/Keras fixtures and the four
MLPerf Tiny models as the ONNX file hub's adapters make of them; the same ONNX file for
both tools), alternately runs
  hub convert M.onnx --target tflm --input-range LO,HI   (int8, verified on TFLM, firmware files)
  onnx2tf -i M.onnx -oiqt -cind NAME calib.npy MEAN STD  (SavedModel and seven .tflite variants)
and prints wall-time ratio (hub / onnx2tf) and peak memory (RSS of the whole process
tree). The plain CLI gets 32 synthetic calibration samples over the same range (NHWC,
mean 0, std 1), and onnx2tf's sample-image file pre-placed in its working directory,
since it reads that before trying to download it. Both commands run under
`unshare -n` (no network interface at all) when this machine allows it, so neither
can reach the network.

    .venv/bin/python bench/convert_speed.py [--repeats 1] [--models tiny_cnn.onnx,ic,...]
Writes bench/results/convert_speed.md and the raw figures beside it (convert_speed.json).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench._procmem import run_measured  # noqa: E402

MLPERF = ROOT.parent / "shared" / "mlperf_tiny"
MLPERF_SOURCES = {
    "ic": (MLPERF / "ic" / "resnet8.h5", (0, 255)),
    "vww": (MLPERF / "vww" / "mobilenet_v1_025.h5", (0, 1)),
    "kws": (MLPERF / "kws" / "ds_cnn_savedmodel", (-123, 26)),
    "ad": (MLPERF / "ad" / "autoencoder.h5", (-85, 15)),
}
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "fixtures"
# fixtures/*.onnx, then the other fixtures that need no option beyond --input-range (see fixtures/README.md).
DEFAULT_MODELS = [*sorted(p.name for p in FIXTURES.glob("*.onnx")), "resnet_tiny.pt", "tiny_cnn.pt2",
                  "keras_cnn.keras", "keras_dense.h5", "keras_savedmodel", *MLPERF_SOURCES]


def offline_prefix() -> list[str]:
    """`unshare -n`: a new network namespace with no interface, if this machine lets us make one."""
    try:
        ok = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ["unshare", "-n"] if ok else []


def prepare(models: list[str], work: Path) -> dict[str, tuple[Path, tuple[float, float]]]:
    """Write each model once as ONNX (through hub's adapters) for both tools to read."""
    import hub.adapters
    from hub.artifacts import LoadOptions

    out = {}
    for name in models:
        if name in MLPERF_SOURCES:
            src, value_range = MLPERF_SOURCES[name]
        else:
            src, value_range = FIXTURES / name, (0, 1)
        if src.suffix == ".onnx":  # the user's own file, external data and dynamic batch included
            # Copied: onnx2tf writes its onnxsim result back over the ONNX file it is given.
            copy = work / "inputs" / src.name
            copy.parent.mkdir(exist_ok=True)
            for part in src.parent.glob(src.name + "*"):  # the model and its external data
                shutil.copy2(part, copy.parent / part.name)
            out[name] = (copy, value_range)
            continue
        path = work / f"{name.replace('.', '_')}.onnx"
        onnx.save(hub.adapters.load(src, LoadOptions()).onnx_model, str(path))
        out[name] = (path, value_range)
    return out


def plain_onnx2tf_command(model_path: Path, value_range, cwd: Path) -> list[str]:
    model = onnx.load(str(model_path))
    args = [str(BIN / "onnx2tf"), "-i", str(model_path), "-o", str(cwd / "out"), "-oiqt", "-n"]
    rng = np.random.default_rng(0)
    inits = {i.name for i in model.graph.initializer}
    for inp in (i for i in model.graph.input if i.name not in inits):
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        nhwc = [32, *shape[2:], shape[1]] if len(shape) == 4 else [32, *shape[1:]]
        np.save(cwd / f"{inp.name}.npy", rng.uniform(*value_range, nhwc).astype(np.float32))
        args += ["-cind", inp.name, str(cwd / f"{inp.name}.npy"), "[0.0]", "[1.0]"]
    # onnx2tf reads this file from its cwd before trying to download it.
    sample = cwd / "calibration_image_sample_data_20x128x128x3_float32.npy"
    np.save(sample, rng.uniform(0, 1, (20, 128, 128, 3)).astype(np.float32))
    return args


def hub_stages(stdout: str) -> dict[str, float]:
    """hub's own timings_s from `--json` (where its time went); empty if it failed."""
    try:
        return json.loads(stdout)["timings_s"]
    except (ValueError, KeyError):
        return {}


def measure_pair(name: str, path: Path, value_range, work: Path, prefix: list[str]) -> tuple[dict, dict]:
    out = work / f"{name}_hub"
    shutil.rmtree(out, ignore_errors=True)
    rng = f"{value_range[0]},{value_range[1]}"
    hub = run_measured([*prefix, str(BIN / "hub"), "convert", str(path), "--target", "tflm",
                        f"--input-range={rng}", "--out", str(out), "--json"])
    hub["stages"] = hub_stages(hub["stdout"])
    cwd = work / f"{name}_plain"
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir()
    plain = run_measured([*prefix, *plain_onnx2tf_command(path, value_range, cwd)], cwd=str(cwd))
    plain["tflite_files"] = len(list((cwd / "out").glob("*.tflite")))
    return hub, plain


def summarise(name: str, hub_runs: list[dict], plain_runs: list[dict]) -> dict:
    for label, runs in (("hub", hub_runs), ("onnx2tf", plain_runs)):
        bad = [r for r in runs if r["returncode"] != 0]
        if bad:
            print(f"{name}: {label} failed: {bad[0]['stderr'][-800:]}", file=sys.stderr)
    hub_wall = float(np.median([r["wall_s"] for r in hub_runs]))
    plain_wall = float(np.median([r["wall_s"] for r in plain_runs]))
    middle = sorted(hub_runs, key=lambda r: r["wall_s"])[len(hub_runs) // 2]  # the median run's own stages
    return {"name": name, "hub_wall_s": hub_wall, "plain_wall_s": plain_wall, "ratio": hub_wall / plain_wall,
            "hub_peak_mb": max(r["peak_rss_mb"] for r in hub_runs),
            "plain_peak_mb": max(r["peak_rss_mb"] for r in plain_runs),
            "ok": all(r["returncode"] == 0 for r in hub_runs + plain_runs),
            "plain_tflite_files": plain_runs[0]["tflite_files"], "hub_stages": middle["stages"],
            "hub_stages_wall_s": middle["wall_s"]}


# Read off the tables below and the two single-run passes made before the committed run (same day).
NOTES = [
    "## Why hub is faster, and where its margin is smallest",
    "",
    "- Both tools pay the import of TensorFlow and onnx2tf (`convert.import`, 3-6 s here, most of hub's "
    "time on the small models). onnx2tf -oiqt then saves a SavedModel and calibrates and converts seven "
    "variants; hub builds the Keras graph in memory and converts the one int8 variant. hub's own extra "
    "work (normalise, analyse, verify on TFLM, export) costs 0.5-3 s.",
    "- The margin is smallest on the tiniest models, where the import is nearly all of both tools' time. In "
    "a single-run pass before this one (same code), keras_dense.h5 came out at 1.01: hub's run (9.5 s) fell "
    "while other jobs loaded the machine and onnx2tf's (9.4 s) just after the load dropped; every other "
    "model was 0.45-0.74. The committed table is the median of 3 alternating runs for that reason.",
    "- Fixed while measuring: the convert child now skips Python's interpreter teardown after writing its "
    "results (`os._exit` in hub/convert/worker.py). With TensorFlow imported, that teardown took ~2 s per "
    "conversion: the first pass showed `convert` ~2 s above the sum of its own stages on every model "
    "(tiny_cnn.onnx 13.3 s vs 10.6 s); now that gap is 0.1-0.3 s (`convert child start/exit`).",
    "- Memory: the peak is the convert child with TensorFlow loaded (660 MB for tiny_cnn.onnx, sampled "
    "alone), about what onnx2tf's own process takes; hub's parent process (onnx, onnxruntime, numpy; 96 MB "
    "on tiny_cnn.onnx) is alive meanwhile, hence hub's 20-70 MB more. The highest is vww, 812 MB.",
    "- hub's own start-up and output outside its stages (`not in a stage`; `-` where the run's own wall "
    "time was not kept) was 0.7-1.7 s in the single-run pass; its imports take ~0.5 s (`-X importtime`).",
    "",
]

STAGES = ("load", "normalise", "analyse", "convert", "convert.import", "convert.onnx2tf",
          "convert.tflite_converter", "verify", "export")


def _outside(row: dict, in_stages: float) -> str:
    """hub's wall time outside its stages, for the run the stages come from (older JSON lacks it)."""
    wall = row.get("hub_stages_wall_s")
    return "-" if wall is None else f"{wall - in_stages:.1f}"


def render(run: dict) -> str:
    rows = run["rows"]
    lines = [
        "# hub convert vs the plain onnx2tf CLI",
        "",
        f"Written by `{run['command']}` on {run['date']} ({run['seconds']:.0f} s; {run['repeats']} run(s) of each "
        f"tool per model, alternating, on a 2-core machine shared with other jobs). Both tools ran "
        + ("under `unshare -n` (no network)." if run["offline"] else "with the network reachable (`unshare -n` "
                                                                      "was not available)."),
        "",
        "| model | hub convert wall (s) | onnx2tf -oiqt wall (s) | ratio hub/onnx2tf | hub peak RSS (MB) "
        "| onnx2tf peak RSS (MB) | both ok |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {r['name']} | {r['hub_wall_s']:.1f} | {r['plain_wall_s']:.1f} | {r['ratio']:.2f} "
              f"| {r['hub_peak_mb']:.0f} | {r['plain_peak_mb']:.0f} | {'yes' if r['ok'] else 'NO'} |" for r in rows]
    slow = [r["name"] for r in rows if r["ratio"] >= 1.0]
    heavy = [r["name"] for r in rows if r["hub_peak_mb"] >= 1024]
    lines += ["", "Goal (issue 3): ratio < 1.0 on every model: "
              + ("met." if not slow else f"**missed** on {', '.join(slow)}.")
              + " hub's peak RSS < 1 GB on every model: " + ("met." if not heavy else f"**missed** on {', '.join(heavy)}."),
              "", "## Where hub's time goes (seconds, from its report.json `timings_s`"
              + ("" if run["repeats"] == 1 else "; of the run with the median wall time"
                 if all("hub_stages_wall_s" in r for r in rows) else "; of each model's second run")
              + ")", "",
              "| model | " + " | ".join(STAGES) + " | convert child start/exit | not in a stage |",
              "|---|" + "---|" * (len(STAGES) + 2)]
    for r in rows:
        st = r["hub_stages"]
        top = sum(v for k, v in st.items() if "." not in k)
        child = st.get("convert", 0.0) - sum(v for k, v in st.items() if k.startswith("convert."))
        lines.append(f"| {r['name']} | " + " | ".join(f"{st[k]:.1f}" if k in st else "-" for k in STAGES)
                     + f" | {child:.1f} | {_outside(r, top)} |")
    lines += [
        "",
        "`convert` is the whole convert child (Python start-up, `convert.import` of TensorFlow and onnx2tf, "
        "`convert.onnx2tf` building the Keras graph, `convert.tflite_converter` writing the one int8 variant; "
        "`convert child start/exit` is the rest: Python start-up, reading the job, process exit); "
        "`not in a stage` is hub's own start-up (Python, its imports) and writing the output folder.",
        "",
        "hub convert includes normalisation, the TFLM compatibility check, int8 conversion of one variant, "
        "verification on the real TFLM interpreter (arena bisection, fidelity vs onnxruntime) and the firmware "
        "files; onnx2tf -oiqt writes a SavedModel and "
        + (f"{rows[0]['plain_tflite_files']}" if rows else "seven")
        + " .tflite variants (float32, float16, dynamic range, integer, full integer, int16 activations). "
        "Peak RSS sums all processes of each tool, sampled every 20 ms.",
        "",
        *NOTES,
    ]
    return "\n".join(lines) + "\n"


def add_output_args(parser: argparse.ArgumentParser, default_out: Path) -> None:
    parser.add_argument("--out", default=str(default_out))
    parser.add_argument("--render-only", action="store_true", help="rewrite --out from the .json beside it")


def recorded_run(args: argparse.Namespace, script: str, measure: Callable[[], dict]) -> dict:
    """Run `measure` and keep its raw figures beside --out (.json) with the command and date;
    with --render-only, reload them instead (to rewrite the text without measuring again)."""
    raw = Path(args.out).with_suffix(".json")
    if args.render_only:
        return json.loads(raw.read_text())
    t0 = time.perf_counter()
    run = measure()
    run.update(seconds=time.perf_counter() - t0, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               command=" ".join([".venv/bin/python", script, *sys.argv[1:]]))
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(run, indent=1))
    return run


def measure_all(models: list[str], repeats: int) -> dict:
    prefix = offline_prefix()
    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-speed-") as tmp:
        work = Path(tmp)
        for name, (path, value_range) in prepare(models, work).items():
            pairs = [measure_pair(name, path, value_range, work, prefix) for _ in range(repeats)]
            rows.append(summarise(name, [h for h, _ in pairs], [p for _, p in pairs]))
            r = rows[-1]
            print(f"{name}: hub {r['hub_wall_s']:.1f} s, onnx2tf {r['plain_wall_s']:.1f} s, "
                  f"ratio {r['ratio']:.2f}", flush=True)
    return {"rows": rows, "repeats": repeats, "offline": bool(prefix)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    add_output_args(parser, ROOT / "bench" / "results" / "convert_speed.md")
    args = parser.parse_args()
    run = recorded_run(args, "bench/convert_speed.py", lambda: measure_all(args.models.split(","), args.repeats))
    text = render(run)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
