"""hub optimize: structured pruning + distillation, every memory and accuracy figure measured on TFLM.

Two parts, each the real CLI as a user runs it (`hub optimize MODEL ... --json`):
- digits: the scikit-learn digits CNN (fixtures/make_digits_fixture.py) at --prune 0.5, distilled and
  trained on the labels alone (--no-distill), same epochs, same seed, on digits_train.npz; every figure
  over digits_val.npz. Targets (issue 15): MACs -40 %, flash -35 %, arena -25 %, the int8 student's
  accuracy on TFLM within 1.0 point of the float teacher's.
- archs: every fixture architecture and the four MLPerf Tiny models at --prune 0.25 and 0.5, distilled
  without labels on synthetic uniform samples over the model's input range (no real data ships with
  them), then converted and run on TFLM: the figure is the int8 student's agreement with the float
  teacher (top-1; mean cosine for the autoencoder), over a held-out fifth of those samples.

    .venv/bin/python bench/optimize.py [--parts digits,archs] [--epochs 20] [--arch-epochs 20]
Writes bench/results/optimize.md and optimize.json; --render-only rewrites the .md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.convert_speed import MLPERF_SOURCES, add_output_args, recorded_run  # noqa: E402

FIXTURES = ROOT / "fixtures"
DIGITS = [str(FIXTURES / "digits_cnn_state.pth"), "--factory", "fixtures/torch_models.py:DigitsCNN",
          "--input-shape", "1,1,8,8", "--data", str(FIXTURES / "digits_train.npz"),
          "--val", str(FIXTURES / "digits_val.npz")]
# fixture -> (extra CLI arguments, input range of its synthetic samples)
ARCHS: dict[str, tuple[list[str], tuple[float, float]]] = {
    "resnet_tiny.pt": ([], (0, 1)),
    "tiny_cnn.pt2": ([], (0, 1)),
    "tiny_cnn_state.pth": (["--factory", "fixtures/torch_models.py:TinyCNN", "--input-shape", "1,3,32,32"], (0, 1)),
    "groupnorm_cnn_state.pth": (["--factory", "fixtures/torch_models.py:GroupNormCNN", "--input-shape", "1,3,32,32"],
                                (0, 1)),
    "tiny_cnn.onnx": ([], (0, 1)),
    "keras_cnn.keras": ([], (0, 1)),
    "keras_dense.h5": ([], (0, 1)),
    "keras_savedmodel": ([], (0, 1)),
}
SYNTHETIC_SAMPLES = 640
TARGETS = {"macs": -0.40, "flash_bytes": -0.35, "arena_bytes": -0.25}
MAX_ACCURACY_DROP = 0.01
NOTES = [
    "Digits: 359 validation samples, so one sample is 0.28 points: distilled and labels-only students differ by one "
    "sample. On a set this small the benchmark does not show that distillation adds accuracy; it shows it costs none.",
    "Synthetic data is a weak test of agreement: on uniform noise most teachers predict one class for every sample "
    "(keras_cnn: 64 of 64 noise samples in one class, measured outside this table), so 1.0000 means the student "
    "learned that class, and a student that misses it scores 0.",
    "keras_cnn at 0.5 scores 0: its teacher's softmax saturates on noise (p = 1.0, the rest 0, whose log is clamped "
    "to -27.6), so the distillation targets are extreme logits that 20 epochs at the default --lr 1e-3 do not reach; "
    "with --lr 1e-2 a float student pruned the same way reached agreement 1.0 on other noise samples (measured "
    "outside this table).",
    "The nn.Module route (tiny_cnn_state.pth, groupnorm_cnn_state.pth) trains BatchNorm in train mode, so its running "
    "statistics move towards the noise: the same TinyCNN through its ONNX graph (BatchNorm folded: tiny_cnn.onnx, "
    ".pt2) keeps 0.75 agreement at 0.5 against 0.38.",
    "Arena unchanged (keras_dense, MLPerf AD): the arena of a dense network is its input and output buffers plus the "
    "widest hidden layer, and pruning keeps the input and output widths.",
]


def optimize_one(label: str, args: list[str], out: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "optimize", *args, "--out", str(out), "--force", "--json"],
                          capture_output=True, text=True, cwd=ROOT)
    row = {"label": label, "exit": proc.returncode, "seconds": round(time.perf_counter() - t0, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return row
    row["optimize"] = json.loads(proc.stdout)["optimize"]
    return row


def synthetic_data(model: str, args: list[str], value_range: tuple[float, float], work: Path) -> Path:
    """SYNTHETIC_SAMPLES uniform samples in the normalised graph's input shape, without labels."""
    from hub import api
    from hub.graph.normalise import normalise_source

    options = api.load_options([a for i, a in enumerate(args) if i and args[i - 1] == "--input-shape"],
                               next((args[i + 1] for i, a in enumerate(args) if a == "--factory"), None))
    spec = normalise_source(api.load_source(model, options), options).inputs[0]
    x = np.random.default_rng(0).uniform(*value_range, (SYNTHETIC_SAMPLES, *spec.shape[1:])).astype(np.float32)
    path = work / f"{Path(model).stem}_synthetic.npz"
    np.savez(path, x=x)
    return path


def measure(parts: list[str], epochs: int, arch_epochs: int) -> dict:
    rows: dict[str, list[dict]] = {"digits": [], "archs": []}
    with tempfile.TemporaryDirectory(prefix="hub-optimize-bench-") as tmp:
        work = Path(tmp)
        if "digits" in parts:
            for distill in (True, False):
                label = "distilled" if distill else "labels only (--no-distill)"
                args = [*DIGITS, "--prune", "0.5", "--epochs", str(epochs), *([] if distill else ["--no-distill"])]
                rows["digits"].append(optimize_one(label, args, work / "digits"))
                _log(rows["digits"][-1])
        if "archs" in parts:
            models = {**{str(FIXTURES / k): v for k, v in ARCHS.items()},
                      **{str(p): ([], r) for p, r in MLPERF_SOURCES.values()}}
            names = {**{str(FIXTURES / k): k for k in ARCHS}, **{str(p): f"mlperf {k}" for k, (p, _) in MLPERF_SOURCES.items()}}
            for model, (extra, value_range) in models.items():
                data = synthetic_data(model, extra, value_range, work)
                for ratio in (0.25, 0.5):
                    args = [model, *extra, "--data", str(data), "--prune", str(ratio), "--epochs", str(arch_epochs)]
                    rows["archs"].append({**optimize_one(names[model], args, work / "arch"), "ratio": ratio})
                    _log(rows["archs"][-1])
    return {"rows": rows, "epochs": epochs, "arch_epochs": arch_epochs}


def _log(row: dict) -> None:
    o = row.get("optimize")
    what = row.get("error") or (f"MACs {o['change']['macs']:+.1%} flash {o['change']['flash_bytes']:+.1%} arena "
                                f"{o['change']['arena_bytes']:+.1%} int8 agreement {o['student']['int8_agreement_tflm']}")
    print(f"{row['label']} {row.get('ratio', '')}: exit {row['exit']} {row['seconds']} s {what}", flush=True)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _num(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def render(run: dict) -> str:
    lines = ["# `hub optimize`: pruning and distillation, measured on TFLM", "",
             f"`{run['command']}` on {run['date']} (2 cores shared with other jobs; {run['seconds']:.0f} s in all).", ""]
    if run["rows"]["digits"]:
        lines += _render_digits(run)
    if run["rows"]["archs"]:
        lines += _render_archs(run)
    lines += ["Notes:", ""] + [f"- {note}" for note in NOTES]
    return "\n".join(lines) + "\n"


def _render_digits(run: dict) -> list[str]:
    lines = [f"## Digits CNN (scikit-learn digits, real labels), --prune 0.5, {run['epochs']} epochs", "",
             "| run | params | MACs | flash (TFLM) | arena (TFLM) | teacher float acc | teacher int8 acc (TFLM) | "
             "student float acc | student int8 acc (TFLM) | int8 agreement with teacher | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for row in run["rows"]["digits"]:
        if "optimize" not in row:
            lines.append(f"| {row['label']} | exit {row['exit']}: {row.get('error')} |" + " |" * 9)
            continue
        o = row["optimize"]
        t, s, c = o["teacher"], o["student"], o["change"]
        lines.append(f"| {row['label']} | {t['params']:,} -> {s['params']:,} ({_pct(c['params'])}) | "
                     f"{t['macs']:,} -> {s['macs']:,} ({_pct(c['macs'])}) | "
                     f"{t['flash_bytes']:,} -> {s['flash_bytes']:,} ({_pct(c['flash_bytes'])}) | "
                     f"{t['arena_bytes']:,} -> {s['arena_bytes']:,} ({_pct(c['arena_bytes'])}) | "
                     f"{_num(t['float_accuracy'])} | {_num(t['int8_accuracy_tflm'])} | {_num(s['float_accuracy'])} | "
                     f"{_num(s['int8_accuracy_tflm'])} | {_num(s['int8_agreement_tflm'])} | {row['seconds']} |")
        verdicts.append(_verdict(row["label"], o))
    return lines + ["", "Targets (issue 15): MACs <= -40 %, flash <= -35 %, arena <= -25 %, int8 student accuracy on TFLM "
                        "within 1.0 point of the float teacher.", ""] + verdicts + [""]


def _verdict(label: str, o: dict) -> str:
    missed = [f"{k} {_pct(o['change'][k])} (target {_pct(v)})" for k, v in TARGETS.items()
              if o["change"][k] is None or o["change"][k] > v]
    drop = o["teacher"]["float_accuracy"] - o["student"]["int8_accuracy_tflm"]
    if drop > MAX_ACCURACY_DROP:
        missed.append(f"accuracy {drop * 100:.2f} points below the float teacher (target <= 1.0)")
    verdict = "all targets met" if not missed else "NOT met: " + "; ".join(missed)
    return f"- {label}: {verdict} (int8 student on TFLM {-drop * 100 + 0.0:+.2f} points against the float teacher)."


def _render_archs(run: dict) -> list[str]:
    lines = [f"## Fixture architectures and MLPerf Tiny, distilled without labels on {SYNTHETIC_SAMPLES} synthetic "
             f"samples, {run['arch_epochs']} epochs", "",
             "Agreement: top-1 with the float teacher (mean cosine for the MLPerf AD autoencoder), over the held-out "
             "fifth of the samples; the int8 models are run on TFLM.", "",
             "| model | prune | exit | route | MACs | flash (TFLM) | arena (TFLM) | teacher int8 agreement | "
             "student float agreement | student int8 agreement | seconds | error |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in run["rows"]["archs"]:
        o = row.get("optimize")
        if o is None:
            lines.append(f"| {row['label']} | {row['ratio']} | {row['exit']} | | | | | | | | {row['seconds']} | "
                         f"{row.get('error', '')} |")
            continue
        c = o["change"]
        lines.append(f"| {row['label']} | {row['ratio']} | 0 | {o['route']} | {_pct(c['macs'])} | "
                     f"{o['student']['flash_bytes']:,} ({_pct(c['flash_bytes'])}) | "
                     f"{_num_bytes(o['student']['arena_bytes'])} ({_pct(c['arena_bytes'])}) | "
                     f"{_num(o['teacher']['int8_agreement_tflm'])} | {_num(o['student']['float_agreement'])} | "
                     f"{_num(o['student']['int8_agreement_tflm'])} | {row['seconds']} | |")
    return lines + [""]


def _num_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="digits,archs")
    parser.add_argument("--epochs", type=int, default=20, help="digits training epochs")
    parser.add_argument("--arch-epochs", type=int, default=20, help="epochs for the architecture sweep")
    add_output_args(parser, ROOT / "bench" / "results" / "optimize.md")
    args = parser.parse_args()
    run = recorded_run(args, "bench/optimize.py", lambda: measure(args.parts.split(","), args.epochs, args.arch_epochs))
    Path(args.out).write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
