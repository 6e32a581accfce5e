"""How well `hub check` predicts TFLite Micro's verdict, measured on the onnx backend node tests.

For each single-node model under onnx/backend/test/data/node (with its test_data_set_0):
  prediction: hub.check.onnx.analyse_onnx on the normalised graph, per quantize mode;
  truth: the model converted (float32 and int8, hub's converter settings, calibrated on the
         test input) and run on the real TFLM interpreter (tflite_micro), outputs compared
         with the expected outputs.
    float32 passes when |y - y_ref| <= 1e-3 + 1e-3 * |y_ref| everywhere (bool/int: equal);
    int8 passes when max |y - y_ref| <= max(3 output scales, 5 % of the expected range)
    (bool/int outputs: at least 90 % of elements equal, since quantized ties can flip).
Truth classes: runs (correct), wrong (runs, outputs off), tflm_fails (allocation/prepare/
invoke fails or the process aborts), convert_fails (onnx2tf or the TFLite converter fails),
refused (hub normalise refuses the model: hub convert would stop there too).

    .venv/bin/python bench/check_accuracy.py [--sample N] [--batch 40] [--out bench/results/check_accuracy.md]
Conversions run in batches, one TensorFlow import per batch (bench/_convert_batch.py);
TFLM runs in a child that is restarted when it aborts (bench/_tflm_batch.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _convert_batch import layout_permutation  # noqa: E402  (bench/ is sys.path[0] when run as a script)

from hub.check.onnx import analyse_onnx  # noqa: E402
from hub.check.tflite import analyse_tflite  # noqa: E402
from hub.errors import HubError  # noqa: E402
from hub.graph.normalise import normalise  # noqa: E402
from hub.tflite.model import read_tflite  # noqa: E402

NODE_TESTS = Path(onnx.__file__).parent / "backend" / "test" / "data" / "node"
LIGHT_RESNET = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / "light_resnet50.onnx"
MODES = ("float32", "int8")
CALIBRATION_SAMPLES = 8
# Part of every cached conversion's key: bump when hub's converter settings change
# (ad9338c: per-tensor FULLY_CONNECTED weights by default).
CONVERTER_STAMP = "onnx2tf-1.29.24 tf-2.19 builtins-only per_channel_dense=False hub.tflite.passes"


def cache_key(model_bytes: bytes, mode: str) -> str:
    """A --work conversion is reused only when the normalised model and the settings are the same."""
    return hashlib.sha256(model_bytes + mode.encode() + CONVERTER_STAMP.encode()).hexdigest()


def cases(sample: int | None) -> list[Path]:
    dirs = sorted(d for d in NODE_TESTS.iterdir() if (d / "model.onnx").exists() and (d / "test_data_set_0").is_dir())
    if sample and sample < len(dirs):
        dirs = sorted(random.Random(0).sample(dirs, sample))
    return dirs


def load_pb(path: Path):
    t = onnx.TensorProto()
    t.ParseFromString(path.read_bytes())
    return t.name, numpy_helper.to_array(t)


def test_data(case: Path, model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], list[np.ndarray]] | None:
    data = case / "test_data_set_0"
    inputs_pb = sorted(data.glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    outputs_pb = sorted(data.glob("output_*.pb"), key=lambda p: int(p.stem.split("_")[1]))
    names = [i.name for i in model.graph.input]
    try:
        inputs = {names[k]: load_pb(p)[1] for k, p in enumerate(inputs_pb)}
        outputs = [load_pb(p)[1] for p in outputs_pb]
    except Exception:  # sequences/optionals are not tensors
        return None
    return inputs, outputs


def predict(case: Path, result: dict) -> onnx.ModelProto | None:
    """Normalise (fixing the test input shapes) and analyse; records prediction or refusal."""
    model = onnx.load(str(case / "model.onnx"))
    data = test_data(case, model)
    if data is None:
        result["refused"] = "test data are not plain tensors"
        return None
    inputs, outputs = data
    result["inputs"], result["expected"] = inputs, outputs
    shapes = {k: tuple(v.shape) for k, v in inputs.items() if v.ndim > 0 and all(d > 0 for d in v.shape)}
    t0 = time.perf_counter()
    try:
        normalised = normalise(model, shapes).onnx_model
    except HubError as exc:
        result["refused"] = exc.one_line()[:200]
        return None
    except Exception as exc:  # a crash in normalise is a finding of its own
        result["refused"] = f"normalise crashed: {type(exc).__name__}: {str(exc)[:150]}"
        return None
    for mode in MODES:
        check = analyse_onnx(normalised, quantize=mode)
        errs = [f for f in check.findings if f.severity == "error"]
        result[f"pred_{mode}"] = check.compatible
        result[f"reason_{mode}"] = errs[0].message if errs else ""
        result[f"ops_{mode}"] = sorted({op for n in check.nodes for op in n["tflite_ops"]})
    result["check_s"] = time.perf_counter() - t0
    return normalised


def calibration(inputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The test input itself plus jittered copies within its range (N, *shape)."""
    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        x = inputs[name]
        if x.dtype.kind != "f":
            out[name] = np.stack([x] * CALIBRATION_SAMPLES)
            continue
        lo, hi = float(np.min(x)) if x.size else 0.0, float(np.max(x)) if x.size else 1.0
        noise = [x] + [np.clip(x + rng.normal(0, 0.05 * (hi - lo + 1e-6), x.shape), lo, hi).astype(x.dtype)
                       for _ in range(CALIBRATION_SAMPLES - 1)]
        out[name] = np.stack(noise).astype(np.float32)
    return out


HANG_S = 150  # a batch child with no finished job for this long is stuck in C++ (SIGALRM cannot reach it)


def _run_batch(jobs_file: str) -> tuple[int, set[str], bool]:
    """One converter child; returns (exit code, dirs done, whether it was killed as hung)."""
    import queue
    import threading

    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_convert_batch.py"), jobs_file],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tempfile.gettempdir(),
                            env={"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
                                 "PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    done, last, hung = set(), time.monotonic(), False
    while proc.poll() is None or not lines.empty():
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is None and time.monotonic() - last > HANG_S:
                proc.kill()
                hung = True
            continue
        if line.startswith("DONE "):
            done.add(line[5:].strip())
            last = time.monotonic()
    return proc.wait(), done, hung


def convert_batches(jobs: list[dict], batch: int) -> None:
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        pending = list(chunk)
        while pending:  # a crash (segfault, OOM) or a hang loses only the job it was on
            with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                json.dump(pending, f)
            code, done, hung = _run_batch(f.name)
            rest = [j for j in pending if j["dir"] not in done]
            if rest and code != 0:
                crashed = Path(rest[0]["dir"])
                crashed.joinpath("error.txt").write_text(f"conversion hung for over {HANG_S} s (killed)" if hung
                                                         else f"converter process died (exit {code})")
                rest = rest[1:]
            pending = rest if len(rest) < len(pending) else []
        print(f"  converted {min(start + batch, len(jobs))}/{len(jobs)}", flush=True)


class TFLMRunner:
    """A tflite_micro child that survives aborts by being restarted."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.stderr = None

    def _start(self) -> None:
        # stderr to a file: TFLM prints a line per failing kernel, and a pipe nobody drains fills up after a
        # few thousand models and blocks the child (the full-corpus run hung there once).
        self.stderr = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "_tflm_batch.py")], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)

    def run(self, job: dict) -> str:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc and self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if line:
            return line.strip()
        self.proc.wait()
        self.stderr.seek(0)
        err = self.stderr.read()[-20000:]
        self.stderr.close()
        self.proc = None
        last = [ln for ln in err.splitlines() if ln.strip()][-1:] or [""]
        return f"FAIL process died (exit {self.proc_code(err)}): {last[0][:200]}"

    @staticmethod
    def proc_code(err: str) -> str:
        return "abort" if "Check failed" in err or "Aborted" in err or "CHECK" in err else "crash"

    def close(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


def tflm_inputs(tflite: bytes, onnx_model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Test inputs in the TFLite model's input order and layout (onnx2tf moves channels last)."""
    model = read_tflite(tflite)
    arrays = []
    by_name = {i.name: i for i in onnx_model.graph.input}
    for idx in model.inputs:
        name = model.signature_names.get(idx, model.tensors[idx].name)
        if name not in inputs:
            name = next((n for n in by_name if n in model.tensors[idx].name), list(inputs)[len(arrays)])
        x = inputs[name]
        if x.size == 0:  # an empty (unused) ONNX input: onnx2tf gives it one element; feed zeros
            arrays.append(np.zeros(model.tensors[idx].shape, x.dtype))
            continue
        perm = layout_permutation(list(x.shape), list(model.tensors[idx].shape))
        arrays.append(np.ascontiguousarray(x.transpose(perm)))
    return arrays


def compare(got: np.ndarray, ref: np.ndarray, scale: float, mode: str) -> bool:
    if got.shape != ref.shape:
        if got.size != ref.size:
            return False
        for perm in _perms(ref.ndim):  # onnx2tf may leave an output channels-last
            if tuple(ref.transpose(perm).shape) == got.shape:
                ref = ref.transpose(perm)
                break
        else:
            got = got.reshape(ref.shape)
    if ref.dtype.kind not in "fc":
        equal = np.asarray(got).astype(ref.dtype) == ref
        return bool(equal.all()) if mode == "float32" else float(np.mean(equal)) >= 0.9 if equal.size else True
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    if ref.size == 0:
        return True
    if not np.isfinite(ref).all():
        same = (np.isnan(ref) == np.isnan(got)) & ((ref == got) | np.isnan(ref) | (np.abs(got - ref) <= 1e-3 + 1e-3 * np.abs(ref)))
        return bool(same.all())
    err = np.abs(got - ref)
    if mode == "float32":
        return bool((err <= 1e-3 + 1e-3 * np.abs(ref)).all())
    span = float(ref.max() - ref.min()) if ref.size else 0.0
    return bool(err.max() <= max(3 * scale, 0.05 * max(span, float(np.abs(ref).max()))))


def _perms(rank: int) -> list[tuple[int, ...]]:
    return [(0, *range(2, rank), 1), (0, rank - 1, *range(1, rank - 1))] if rank >= 3 else []


def truth(result: dict, job_dir: Path, normalised: onnx.ModelProto, runner: TFLMRunner, mode: str) -> None:
    err = job_dir / "error.txt"
    tfl = job_dir / "model.tflite"
    if err.exists() or not tfl.exists():
        result[f"truth_{mode}"] = "convert_fails"
        text = err.read_text() if err.exists() else "no output"
        result[f"detail_{mode}"] = " ".join(text.split())[-200:]
        return
    data = tfl.read_bytes()
    result[f"tflite_ops_{mode}"] = sorted(read_tflite(data).op_histogram())
    result[f"tflite_check_{mode}"] = analyse_tflite(data).compatible
    try:
        arrays = tflm_inputs(data, normalised, result["inputs"])
    except Exception as exc:
        result[f"truth_{mode}"], result[f"detail_{mode}"] = "tflm_fails", f"inputs do not fit: {exc}"[:200]
        return
    np.savez(job_dir / "inputs.npz", **{f"i{k}": a for k, a in enumerate(arrays)})
    status = runner.run({"tflite": str(tfl), "inputs": str(job_dir / "inputs.npz"), "out": str(job_dir / "out.npz")})
    if status != "OK":
        result[f"truth_{mode}"], result[f"detail_{mode}"] = "tflm_fails", status[5:][:200]
        return
    out = np.load(job_dir / "out.npz")
    outs = [out[f"o{k}"] for k in range(len(result["expected"])) if f"o{k}" in out.files]
    scales = [float(out[f"s{k}"][0]) for k in range(len(outs))]
    ok = len(outs) == len(result["expected"]) and all(
        compare(g, r, s, mode) for g, r, s in zip(outs, result["expected"], scales))
    result[f"truth_{mode}"] = "runs" if ok else "wrong"
    if not ok:
        result[f"detail_{mode}"] = "outputs differ from the expected values"


def confusion(results: list[dict], mode: str) -> dict[tuple[bool, str], int]:
    return Counter((r[f"pred_{mode}"], r[f"truth_{mode}"]) for r in results if f"truth_{mode}" in r)


# How the truth counts: hub check predicts whether TFLM accepts and runs the converted model. "wrong"
# (TFLM runs it, the numbers are off) is the converter's or int8 quantization's error, which hub
# convert's verification reports; it counts as running. The strict figure (wrong = failure) is shown too.
RUNS = {"runs", "wrong"}


def agrees(r: dict, mode: str, strict: bool = False) -> bool:
    return r[f"pred_{mode}"] == (r[f"truth_{mode}"] == "runs" if strict else r[f"truth_{mode}"] in RUNS)


# Known causes of the disagreements that remain, by model-name pattern (first match wins); each was
# read from the converted .tflite, the converter's error or TFLM's message (see the results file).
CAUSES: list[tuple[str, str]] = [
    (r"attention_4d_gqa.*_expanded float32", "onnx2tf stops broadcasting the grouped-query heads (a Mul of [2,6,1,8,3] "
     "and [2,3,6,8,3]); every op is a TFLM builtin, so hub check sees nothing to refuse"),
    (r"bernoulli_seed_expanded", "onnx2tf/TensorFlow fold the seeded RandomUniformLike into a constant: TFLM runs a "
     "model that is no longer random. hub check refuses random ops on purpose"),
    (r"(matmul_[234]d|attention_3d_transpose_verification_expanded) int8", "int8 BATCH_MATMUL of two run-time "
     "tensors runs on TFLM here (matmul_2d/3d with wrong outputs); hub check refuses the pattern because Gemm and "
     "the other attention expansions with it fail to convert"),
    (r"test_gridsample float32", "onnx2tf's GridSample fails on this grid (a squeeze of a non-1 axis of [1,6,2,3]) "
     "while the other 4-D GridSample tests convert; only builtins are involved"),
    (r"qlinearmatmul_2D_int8", "onnx2tf casts QLinearMatMul's int8 inputs to float and the 2-D case runs (wrong "
     "numbers); hub check refuses int8 model inputs outside Div (the 3-D case and min/max_int8 fail to convert)"),
    (r"rotary_embedding_no_position_ids(_interleaved)?_expanded", "shape inference leaves the Split sizes unknown, so "
     "hub check calls the output data-dependent; onnx2tf resolves them and the model runs (wrong numbers)"),
    (r"rotary_embedding_no_position_ids_rotary_dim_expanded", "onnx2tf stops broadcasting [2,2,1,3] with [2,3,4,2] "
     "in a Mul (its channels-last guess for this 4-D tensor); only builtins are involved"),
    (r"rms_normalization_4d_axis(1|_negative_3)_expanded", "onnx2tf stops broadcasting the channels-last input "
     "[2,4,5,3] with the scale it reshaped to [1,5,4,3]; only builtins are involved"),
]
# Likely reasons outputs are wrong where TFLM runs the model, read from the op and its attributes, not traced
# (counted as running; hub convert's verification reports the mismatch).
WRONG_CAUSES: list[tuple[str, str]] = [
    (r"attention_", "onnx2tf lays out the attention expansion's 4-D reshapes/transposes wrongly"),
    (r"layer_normalization_", "onnx2tf's channels-last layout of the LayerNorm expansion's flatten/reshape"),
    (r"averagepool_2d_dilations", "onnx2tf ignores AveragePool dilations"),
    (r"batchnorm_example_training_mode", "training-mode BatchNormalization computed as inference"),
    (r"concat_2d_axis_0|split_equal_parts_default_axis|concat_1d", "onnx2tf's axis mapping for 1-D/2-D tensors"),
    (r"mod_mixed_sign", "Mod(fmod=1) converted as FLOOR_MOD (floor, not truncated, remainder)"),
    (r"gridsample", "onnx2tf's GridSample emulation differs from ONNX at the borders"),
    (r"resize_", "onnx2tf's coordinate transform for this Resize mode"),
    (r" int8", "int8 model: quantization error or the converter (not traced)"),
]



def cause(name: str, mode: str, wrong: bool = False) -> str:
    for pattern, text in (WRONG_CAUSES if wrong else CAUSES):
        if text and re.search(pattern, f"{name} {mode}"):
            return text
    return "onnx2tf output differs (not traced)" if wrong else "not yet explained"


def report(results: list[dict], refused: list[dict], elapsed: float, total_cases: int, resnet: dict,
           truth_command: str = "") -> str:
    command = "`.venv/bin/python bench/check_accuracy.py " + " ".join(sys.argv[1:]) + "`"
    lines = ["# hub check accuracy against the real TFLM interpreter", "",
             f"Corpus: onnx {onnx.__version__} backend node tests ({total_cases} with test data); "
             f"this run: {len(results) + len(refused)} models, {elapsed / 60:.1f} min wall "
             f"({elapsed / max(1, len(results) + len(refused)):.2f} s per model).",
             f"Command: {command}" + (f"; truth from {truth_command}" if truth_command else ""), "",
             "Truth: converted with hub's converter settings (float32; int8 full-integer, calibrated on the test "
             "input and 7 jittered copies), run on tflite_micro. float32 passes at |y-y_ref| <= 1e-3 + 1e-3|y_ref|; "
             "int8 at max error <= max(3 output scales, 5 % of the expected range); bool/int outputs equal "
             "(int8: >= 90 % equal).", "",
             "Counting: hub check predicts whether TFLM accepts and runs the converted model. `runs` and `wrong` "
             "(TFLM runs it but the numbers are off: an onnx2tf or int8-quantization error, which hub convert's "
             "verification reports) count as running; `tflm_fails` (allocation, prepare or invoke fails, or the "
             "process aborts) and `convert_fails` (onnx2tf or the TFLite converter stops: there is nothing to "
             "run) count as not running. Unsafe = predicted compatible, then refused by TFLM. The strict figure "
             "also counts `wrong` as not running.", "",
             f"Normalise refused {len(refused)} models before analysis (hub convert stops there too); they are "
             "not in the tables.", "", "## Summary", "",
             "| mode | models | agreement | strict agreement | unsafe (compatible, TFLM fails) | "
             "compatible, converter fails |", "|---|---|---|---|---|---|"]
    tables = []
    for mode in MODES:
        c = confusion(results, mode)
        n = sum(c.values())
        done = [r for r in results if f"truth_{mode}" in r]
        agree = sum(agrees(r, mode) for r in done)
        strict = sum(agrees(r, mode, strict=True) for r in done)
        unsafe = c.get((True, "tflm_fails"), 0)
        lines.append(f"| {mode} | {n} | {agree}/{n} = {100 * agree / max(1, n):.1f} % | "
                     f"{strict}/{n} = {100 * strict / max(1, n):.1f} % | {unsafe} | {c.get((True, 'convert_fails'), 0)} |")
        tables += [f"## {mode}", "", "| prediction \\ truth | runs | wrong | tflm_fails | convert_fails |",
                   "|---|---|---|---|---|"]
        for pred in (True, False):
            row = [str(c.get((pred, t), 0)) for t in ("runs", "wrong", "tflm_fails", "convert_fails")]
            tables.append(f"| {'compatible' if pred else 'incompatible'} | " + " | ".join(row) + " |")
        tables.append("")
    all_n = sum(1 for r in results for m in MODES if f"truth_{m}" in r)
    all_agree = sum(agrees(r, m) for r in results for m in MODES if f"truth_{m}" in r)
    lines += ["", f"Overall: {all_agree}/{all_n} = {100 * all_agree / max(1, all_n):.1f} % agreement.", ""] + tables
    lines += ["## Disagreements", "", "| model | mode | predicted | truth | cause | check's reason / truth detail | "
              "TFLite ops |", "|---|---|---|---|---|---|---|"]
    lines += _rows(results, lambda r, m: not agrees(r, m))
    lines += ["", "## Wrong outputs (TFLM runs the model; counted as running)", "",
              "| model | mode | predicted | truth | likely cause | check's reason / truth detail | TFLite ops |",
              "|---|---|---|---|---|---|---|"]
    lines += _rows(results, lambda r, m: r[f"truth_{m}"] == "wrong" and agrees(r, m), wrong=True)
    lines += ["", "## Refused by normalise", "", ", ".join(f"{r['name']}" for r in refused) or "none", ""]
    if resnet:
        lines += ["## Speed: hub check on ResNet-50", "", resnet["text"], ""]
    return "\n".join(lines)


def _rows(results: list[dict], pick: Callable[[dict, str], bool], wrong: bool = False) -> list[str]:
    rows = []
    for r in results:
        for mode in MODES:
            if f"truth_{mode}" not in r or not pick(r, mode):
                continue
            why = r[f"reason_{mode}"] or r.get(f"detail_{mode}", "")
            rows.append(f"| {r['name']} | {mode} | {'compatible' if r[f'pred_{mode}'] else 'incompatible'} | "
                        f"{r[f'truth_{mode}']} | {cause(r['name'], mode, wrong)} | {why.replace('|', '/')[:160]} | "
                        f"{', '.join(r.get(f'tflite_ops_{mode}', []))} |")
    return rows


def time_resnet(runs: int = 5) -> dict:
    """`hub check` on ResNet-50 as a user runs it: a new process each time, after one warm-up run
    (bytecode cached, as after any first run; this shell sets PYTHONDONTWRITEBYTECODE, so the cache
    goes to a temporary PYTHONPYCACHEPREFIX). Wall and CPU (user+sys) per run, medians."""
    import os
    import resource
    import statistics

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="hub-pyc-")
    cmd = [sys.executable, "-m", "hub.cli", "check", str(LIGHT_RESNET)]
    subprocess.run(cmd, capture_output=True, cwd=ROOT, env=env)  # warm-up: writes the bytecode cache
    wall, cpu, proc = [], [], None
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        wall.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    said = " ".join(proc.stdout.split()) if proc.returncode < 2 else proc.stderr.strip()[-200:]
    first = said[said.find("will"):].split(";")[0] if "will" in said else said[:120]
    load = os.getloadavg()[0]
    path = LIGHT_RESNET.relative_to(ROOT) if LIGHT_RESNET.is_relative_to(ROOT) else LIGHT_RESNET
    parts = _resnet_parts()
    text = (f"`hub check {path}` (CLI, end to end, a new process per run, median of {runs}): "
            f"{statistics.median(wall):.2f} s wall, {statistics.median(cpu):.2f} s CPU (user+sys), exit "
            f"{proc.returncode} (\"{' '.join(first.split())}\"). Load average during the runs: {load:.1f} on "
            f"{os.cpu_count()} cores (other jobs share the machine: wall exceeds CPU by the wait for a core). "
            f"Runs (wall s): {', '.join(f'{w:.2f}' for w in wall)}; (CPU s): {', '.join(f'{c:.2f}' for c in cpu)}. "
            f"CPU in one process: importing hub.api (onnx, numpy) {parts['import']:.2f} s, loading "
            f"{parts['load']:.3f} s, normalise {parts['normalise']:.2f} s, analyse_onnx {parts['analyse']:.3f} s, "
            f"importing hub.cli and hub.report.terminal (typer, rich) {parts['cli']:.2f} s, and typer's argument parsing "
            f"imports typer._adapters, which imports pydantic: {parts['typer_parse']:.2f} s; the rest is the "
            f"interpreter's start and typer's parsing. Goal < 1 s wall: {'met' if statistics.median(wall) < 1 else 'not met'} "
            "at this load.")
    return {"text": text, "wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu)}


def _resnet_parts() -> dict[str, float]:
    """CPU seconds of hub check's stages on ResNet-50, in a fresh process (imports counted once)."""
    code = ("import json,time;t=time.process_time();from hub import api;from hub.artifacts import LoadOptions;"
            "from hub.graph.normalise import normalise_source;from hub.check.onnx import analyse_onnx;"
            "a=time.process_time();s=api.load_source(api.Path(%r),LoadOptions());b=time.process_time();"
            "n=normalise_source(s,LoadOptions());c=time.process_time();analyse_onnx(n.onnx_model,'tflm','int8');"
            "d=time.process_time();import hub.cli,hub.report.terminal;e=time.process_time();import typer._adapters;"
            "f=time.process_time();print(json.dumps({'import':a-t,'load':b-a,'normalise':c-b,'analyse':d-c,"
            "'cli':e-d,'typer_parse':f-e}))"
            % str(LIGHT_RESNET))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def repredict(args) -> int:
    """Re-run the (cheap) predictions against a saved truth, after a table change."""
    t0 = time.perf_counter()
    dump = json.loads(Path(args.reuse).read_text())
    saved = dump["results"] if isinstance(dump, dict) else dump  # older dumps are a bare list
    truth_command = dump.get("command", "") if isinstance(dump, dict) else ""
    if isinstance(dump, dict) and dump.get("note"):
        truth_command += f" ({dump['note']})"
    results, refused = [], []
    for old in saved:
        r = {"name": old["name"]}
        if predict(NODE_TESTS / old["name"], r) is None or "truth_float32" not in old:
            refused.append(r)
            continue
        r.update({k: v for k, v in old.items() if k.startswith(("truth_", "detail_", "tflite_"))})
        results.append(r)
    elapsed = time.perf_counter() - t0
    text = report(results, refused, elapsed, len(cases(None)), {} if args.no_resnet else time_resnet(),
                  truth_command)
    text = text.replace(f"{elapsed / 60:.1f} min wall", f"predictions redone in {elapsed / 60:.1f} min wall against the "
                        f"truth saved in {args.reuse}", 1)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def merge_truth(args, fresh: list[dict]) -> int:
    """Replace the --reuse dump's rows for the models measured again, say so in its note, re-predict."""
    dump = json.loads(Path(args.reuse).read_text())
    names = {r["name"] for r in fresh}
    slim = [{k: v for k, v in r.items() if k not in ("inputs", "expected")} for r in fresh]
    dump["results"] = [r for r in dump["results"] if r["name"] not in names] + slim
    note = f"truth of {len(names)} models matching {args.only!r} measured again after a converter-side change"
    dump["note"] = "; ".join(filter(None, [dump.get("note"), note]))
    Path(args.reuse).write_text(json.dumps(dump, indent=1, default=str))
    return repredict(args)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=None, help="random sample of N models (seed 0)")
    ap.add_argument("--batch", type=int, default=40, help="models per converter process")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "check_accuracy.md"))
    ap.add_argument("--json", default=None, help="also dump per-model results here")
    ap.add_argument("--no-resnet", action="store_true")
    ap.add_argument("--work", default=None, help="work folder; conversions already in it are reused")
    ap.add_argument("--reuse", default=None, help="a --json dump: keep its truth, redo only the predictions")
    ap.add_argument("--only", default=None,
                    help="with --reuse: names (comma-separated substrings) whose truth is measured again and "
                         "merged into the dump, after a converter-side change that concerns only them")
    args = ap.parse_args()
    if args.reuse and not args.only:
        return repredict(args)
    t_start = time.perf_counter()
    all_cases = cases(None)
    selected = cases(args.sample)
    if args.only:
        selected = [c for c in selected if any(s in c.name for s in args.only.split(","))]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="hub-check-acc-"))
    results, refused, jobs, models = [], [], [], {}
    for case in selected:
        r = {"name": case.name}
        normalised = predict(case, r)
        if normalised is None:
            refused.append(r)
            continue
        names = [i.name for i in normalised.graph.input]
        if any(n not in r["inputs"] for n in names):
            r["refused"] = "test data do not name every input"
            refused.append(r)
            continue
        models[case.name] = normalised
        model_bytes = normalised.SerializeToString()
        for mode in MODES:
            d = work / mode / case.name
            key = cache_key(model_bytes, mode)
            done = (d / "model.tflite").exists() or (d / "error.txt").exists()
            if done and (d / "key.txt").exists() and (d / "key.txt").read_text() == key:
                continue  # converted by an earlier run with --work, from the same model and settings
            d.mkdir(parents=True, exist_ok=True)
            for stale in ("model.tflite", "error.txt", "out.npz", "inputs.npz"):
                (d / stale).unlink(missing_ok=True)
            (d / "key.txt").write_text(key)
            (d / "model.onnx").write_bytes(model_bytes)
            np.savez(d / "calibration.npz", **calibration(r["inputs"], names))
            jobs.append({"dir": str(d), "quantize": mode})
        results.append(r)
    print(f"{len(results)} models to convert ({len(refused)} refused by normalise)", flush=True)
    convert_batches(jobs, args.batch)
    runner = TFLMRunner()
    for r in results:
        for mode in MODES:
            truth(r, work / mode / r["name"], models[r["name"]], runner, mode)
    runner.close()
    elapsed = time.perf_counter() - t_start
    if args.reuse:
        return merge_truth(args, results + refused)
    if args.json:
        slim = [{k: v for k, v in r.items() if k not in ("inputs", "expected")} for r in results + refused]
        command = "`.venv/bin/python bench/check_accuracy.py " + " ".join(sys.argv[1:]) + "`"
        Path(args.json).write_text(json.dumps({"command": command, "elapsed_s": elapsed, "results": slim},
                                              indent=1, default=str))
    resnet = {} if args.no_resnet else time_resnet()
    text = report(results, refused, elapsed, len(all_cases), resnet)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
