"""hub convert vs the plain onnx2tf CLI, side by side in one run.

For each model (the ONNX fixtures and the four MLPerf Tiny models, all as the
same ONNX file for both tools), alternately runs
  hub convert M.onnx --target tflm            (int8, verified on TFLM, firmware files)
  onnx2tf -i M.onnx -oiqt -cind NAME calib.npy MEAN STD   (seven .tflite variants)
and prints wall-time ratio (hub / onnx2tf) and peak memory (RSS of the whole
process tree). Both get the same synthetic calibration samples; the plain CLI
also gets onnx2tf's sample-image file pre-placed in its working directory, since
it would otherwise try to download it (no network here).

    .venv/bin/python bench/convert_speed.py [--repeats 1] [--models ic,kws,...]
Writes bench/results/convert_speed.md.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

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


def prepare(models: list[str], work: Path) -> dict[str, tuple[Path, tuple[float, float]]]:
    """Write each model once as ONNX (through hub's adapters) for both tools to read."""
    import adapters
    from hub.artifacts import LoadOptions

    out = {}
    for name in models:
        if name in MLPERF_SOURCES:
            src, value_range = MLPERF_SOURCES[name]
        else:
            src, value_range = ROOT / "fixtures" / name, (0, 1)
        model = adapters.load(src, LoadOptions()).onnx_model
        path = work / f"{Path(name).stem}.onnx"
        onnx.save(model, str(path))
        out[Path(name).stem] = (path, value_range)
    return out


def plain_onnx2tf_command(model_path: Path, value_range, cwd: Path) -> list[str]:
    model = onnx.load(str(model_path))
    args = [str(BIN / "onnx2tf"), "-i", str(model_path), "-o", str(cwd / "out"), "-oiqt", "-n"]
    rng = np.random.default_rng(0)
    for inp in model.graph.input:
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        nhwc = [32, *shape[2:], shape[1]] if len(shape) == 4 else [32, *shape[1:]]
        np.save(cwd / f"{inp.name}.npy", rng.uniform(*value_range, nhwc).astype(np.float32))
        args += ["-cind", inp.name, str(cwd / f"{inp.name}.npy"), "[0.0]", "[1.0]"]
    # onnx2tf reads this file from its cwd before trying to download it.
    sample = cwd / "calibration_image_sample_data_20x128x128x3_float32.npy"
    np.save(sample, rng.uniform(0, 1, (20, 128, 128, 3)).astype(np.float32))
    return args


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--models", default="resnet_tiny.pt,ic,kws,vww,ad")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "convert_speed.md"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, (path, value_range) in prepare(args.models.split(","), work).items():
            hub_runs, plain_runs = [], []
            for _ in range(args.repeats):  # alternate, so drift hits both alike
                out = work / f"{name}_hub"
                shutil.rmtree(out, ignore_errors=True)
                rng = f"{value_range[0]},{value_range[1]}"
                hub_runs.append(run_measured([str(BIN / "hub"), "convert", str(path), "--target", "tflm",
                                              "--input-range", rng, "--out", str(out), "--json"]))
                cwd = work / f"{name}_plain"
                shutil.rmtree(cwd, ignore_errors=True)
                cwd.mkdir()
                plain_runs.append(run_measured(plain_onnx2tf_command(path, value_range, cwd), cwd=str(cwd)))
            for label, runs in (("hub", hub_runs), ("onnx2tf", plain_runs)):
                bad = [r for r in runs if r["returncode"] != 0]
                if bad:
                    print(f"{name}: {label} failed: {bad[0]['stderr'][-800:]}", file=sys.stderr)
            hub_wall = float(np.median([r["wall_s"] for r in hub_runs]))
            plain_wall = float(np.median([r["wall_s"] for r in plain_runs]))
            rows.append((name, hub_wall, plain_wall, hub_wall / plain_wall,
                         max(r["peak_rss_mb"] for r in hub_runs), max(r["peak_rss_mb"] for r in plain_runs),
                         all(r["returncode"] == 0 for r in hub_runs + plain_runs)))
            print(f"{name}: hub {hub_wall:.1f} s, onnx2tf {plain_wall:.1f} s, ratio {hub_wall / plain_wall:.2f}", flush=True)
    lines = [
        f"# hub convert vs plain onnx2tf CLI ({args.repeats} run(s) each, alternating; 2-core machine)",
        "",
        "`.venv/bin/python bench/convert_speed.py`",
        "",
        "| model | hub convert wall (s) | onnx2tf -oiqt wall (s) | ratio hub/onnx2tf | hub peak RSS (MB) | onnx2tf peak RSS (MB) | both ok |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {h:.1f} | {p:.1f} | {r:.2f} | {hm:.0f} | {pm:.0f} | {'yes' if ok else 'NO'} |"
              for n, h, p, r, hm, pm, ok in rows]
    lines += ["", "hub convert includes normalisation, the TFLM compatibility check, int8 conversion of one variant, "
              "verification on the real TFLM interpreter (arena bisection, fidelity vs onnxruntime) and the firmware files; "
              "onnx2tf -oiqt writes a SavedModel and seven .tflite variants. Peak RSS sums all processes of each tool."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
