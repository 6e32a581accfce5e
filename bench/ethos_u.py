"""hub convert --target ethos-u on the MLPerf Tiny models and the fixtures, against Vela's own command line.

For each model, the real CLI as a user runs it:
  hub convert MODEL --target ethos-u --npu ethos-u55-128 --input-range LO,HI --out DIR --json
(the int8 model is verified on TFLM, then compiled by Vela), then the same int8 model.tflite compiled for
every other --npus config through hub.firmware.ethos_u.compile_model (what convert calls). Beside each, Vela's
command line run directly on the same int8 file:
  vela model.tflite --accelerator-config NPU --output-dir DIR
whose printed summary (Total SRAM used, Total Off-chip Flash used, CPU/NPU operators) and summary CSV
(cycles_total) are what hub's figures must match.

    .venv/bin/python bench/ethos_u.py [--models ic,vww,...] [--npus ethos-u55-128,ethos-u65-256]
Writes bench/results/ethos_u.md and ethos_u.json; --render-only rewrites the .md.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.convert_speed import MLPERF_SOURCES, add_output_args, recorded_run  # noqa: E402
from hub.firmware import ethos_u  # noqa: E402

FIXTURES = ROOT / "fixtures"
FIXTURE_MODELS = {"resnet_tiny.pt": (0, 1), "tiny_cnn.onnx": (0, 1), "keras_cnn.keras": (0, 1),
                  "kws_gru.onnx": (0, 1)}
VELA = Path(sys.executable).parent / "vela"
_KIB = re.compile(r"^Total (SRAM|Off-chip Flash|DRAM) used\s+([\d.]+) KiB", re.M)
_OPS = re.compile(r"^(CPU|NPU) operators = (\d+)", re.M)


def sources() -> dict[str, tuple[Path, tuple[float, float]]]:
    return {**{f"mlperf_{k}": v for k, v in MLPERF_SOURCES.items()},
            **{k: (FIXTURES / k, v) for k, v in FIXTURE_MODELS.items()}}


def convert(name: str, path: Path, value_range: tuple[float, float], npu: str, work: Path) -> dict:
    out = work / name.replace(".", "_")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "hub.cli", "convert", str(path), "--target", "ethos-u", "--npu", npu,
                           "--input-range", f"{value_range[0]},{value_range[1]}", "--out", str(out), "--force",
                           "--json"], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hub: error:")]
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return {"exit": proc.returncode, "error": errors[-1] if errors else None, "out": out, "report": report,
            "seconds": round(time.perf_counter() - t0, 1)}


def vela_cli(int8: Path, npu: str, work: Path) -> dict:
    """Vela's own command line on the int8 file: the figures it prints and writes."""
    out = work / f"cli_{int8.parent.name}_{npu}"
    proc = subprocess.run([str(VELA), str(int8), "--accelerator-config", npu, "--output-dir", str(out),
                           "--show-cpu-operations"],  # its operator counts then list the ops, as hub's do
                          capture_output=True, text=True, timeout=3600)
    kib = {k: round(float(v) * 1024) for k, v in _KIB.findall(proc.stdout)}
    ops = {k: int(v) for k, v in _OPS.findall(proc.stdout)}
    summary = next(csv.DictReader(next(out.glob("*_summary_*.csv")).open()))
    return {"exit": proc.returncode, "sram_bytes": kib.get("SRAM", 0), "flash_bytes": kib.get("Off-chip Flash", 0),
            "dram_bytes": kib.get("DRAM", 0), "cpu_ops": ops.get("CPU"), "npu_ops": ops.get("NPU"),
            "cycles": round(float(summary["cycles_total"])),
            "tflite_size": (out / f"{int8.stem}_vela.tflite").stat().st_size}


def hub_row(result: dict) -> dict:
    keys = ("npu", "system_config", "memory_mode", "ops_total", "npu_ops", "npu_op_share", "npu_mac_share",
            "macs_total", "sram_bytes", "flash_bytes", "dram_bytes", "cycles", "inference_ms", "vela_cpu_ops",
            "vela_npu_ops", "tflite_size", "arena_bytes")
    row = {k: result[k] for k in keys}
    row["cpu"] = [f"{op['op']}: {'; '.join(op['reasons'])}" for op in result["cpu_ops"]]
    return row


def measure(models: list[str], npus: list[str]) -> dict:
    rows = []
    all_sources = sources()
    with tempfile.TemporaryDirectory(prefix="hub-ethos-u-") as tmp:
        work = Path(tmp)
        for name in models:
            path, value_range = all_sources[name]
            done = convert(name, path, value_range, npus[0], work)
            if "ethos_u" not in done["report"]:
                rows.append({"model": name, "npu": npus[0], "exit": done["exit"], "error": done["error"]})
                continue
            int8 = done["out"] / "model.tflite"
            cosine = (done["report"].get("fidelity") or {}).get("cosine")
            for npu in npus:
                result = done["report"]["ethos_u"] if npu == npus[0] else \
                    ethos_u.compile_model(int8.read_bytes(), npu).to_dict()
                rows.append({"model": name, "exit": done["exit"], "cosine": cosine, "hub": hub_row(result),
                             "cli": vela_cli(int8, npu, work), "convert_s": done["seconds"]})
                r = rows[-1]
                print(f"{name} {npu}: NPU {r['hub']['npu_ops']}/{r['hub']['ops_total']} ops, "
                      f"cycles hub {r['hub']['cycles']} cli {r['cli']['cycles']}", flush=True)
    return {"rows": rows, "npus": npus}


def matches(r: dict) -> bool:
    """The CLI prints memory in KiB with two decimals: equal at that precision (within 6 bytes)."""
    hub, cli = r["hub"], r["cli"]
    memory = all(abs(hub[k] - cli[k]) <= 6 for k in ("sram_bytes", "flash_bytes", "dram_bytes"))
    return memory and (hub["cycles"], hub["vela_cpu_ops"], hub["vela_npu_ops"], hub["tflite_size"]) == \
        (cli["cycles"], cli["cpu_ops"], cli["npu_ops"], cli["tflite_size"])


def render(run: dict) -> str:
    lines = ["# Ethos-U through `hub convert --target ethos-u`, beside Vela's own command line", "",
             f"`{run['command']}` on {run['date']} (2 shared cores; {run['seconds']:.0f} s in all). Vela "
             "5.2.0 with its default system config and memory mode per NPU. NPU ops/MACs: of the verified int8 "
             "model's ops (hub's MAC count); SRAM, flash, DRAM, cycles and time: Vela's estimator; *Vela ops*: "
             "Vela's own CPU/NPU operator counts (its graph after lowering). *CLI*: `vela int8.tflite "
             "--accelerator-config NPU` on the same file: SRAM / flash / cycles / Vela ops as it prints them.", "",
             "| model | NPU | cosine (TFLM int8) | NPU ops | NPU MACs | SRAM (B) | flash (B) | DRAM (B) | cycles | ms "
             "| Vela ops CPU/NPU | CLI SRAM / flash / cycles / ops | same | left on the CPU (Vela's reason) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run["rows"]:
        if "hub" not in r:
            lines.append(f"| {r['model']} | {r['npu']} | exit {r['exit']} | | | | | | | | | | | {r['error']} |")
            continue
        h, c = r["hub"], r["cli"]
        cos = f"{r['cosine']:.6f}" if isinstance(r.get("cosine"), float) else "-"
        lines.append(f"| {r['model']} | {h['npu']} | {cos} | {h['npu_ops']}/{h['ops_total']} | "
                     f"{h['npu_mac_share']:.1%} | {h['sram_bytes']:,} | {h['flash_bytes']:,} | {h['dram_bytes']:,} | "
                     f"{h['cycles']:,} | {h['inference_ms']:g} | {h['vela_cpu_ops']}/{h['vela_npu_ops']} | "
                     f"{c['sram_bytes']:,} / {c['flash_bytes']:,} / {c['cycles']:,} / {c['cpu_ops']}/{c['npu_ops']} | "
                     f"{'yes' if matches(r) else 'NO'} | {'<br>'.join(h['cpu']) or '-'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(sources()))
    parser.add_argument("--npus", default="ethos-u55-128,ethos-u65-256")
    add_output_args(parser, ROOT / "bench" / "results" / "ethos_u.md")
    args = parser.parse_args()
    run = recorded_run(args, "bench/ethos_u.py", lambda: measure(args.models.split(","), args.npus.split(",")))
    Path(args.out).write_text(render(run))
    print(render(run))


if __name__ == "__main__":
    main()
