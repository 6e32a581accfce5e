"""Arm Ethos-U NPUs: the int8 flatbuffer compiled by Arm's Vela, and what Vela says about it.

Vela (PyPI `ethos-u-vela`, pinned) rewrites an int8 .tflite into one in which every run of ops the
NPU can execute becomes one `ethos-u` custom op (a command stream); ops it cannot map stay ordinary
TFLite builtins that TFLM runs on the Cortex-M. Vela runs in a child process (hub.child), as its own
command line does, and hub reads what it writes: the optimised .tflite, its summary CSV (SRAM, flash,
cycles from Vela's performance estimator at the system config's clock), its per-layer CSV (NPU or
CPU per op) and its "Warning (supported operators) ... Reason: ..." lines (why an op stayed on the CPU).

The host has no NPU: the `ethos-u` op cannot execute here, so hub verifies the int8 model on TFLM
*before* Vela, and the report says so.
"""
from __future__ import annotations

import csv
import re
import tempfile
from dataclasses import asdict, dataclass, field, replace
from math import prod
from pathlib import Path
from typing import Any

from hub.artifacts import CheckResult, Finding, InputLayout
from hub.check.layers import tflite_layers
from hub.child import run_python_module
from hub.errors import IncompatibleError, InputError
from hub.firmware.export import export_firmware
from hub.knowledge.arena import recommended_arena
from hub.knowledge.resolver import CUSTOM_OPS
from hub.tflite.model import read_tflite

DEFAULT_NPU = "ethos-u55-128"
VELA_TIMEOUT_S = 600
VELA_MEMORY_MB = 4096
HOST_NOTE = ("the host cannot execute the ethos-u op: fidelity was verified on TFLM with the int8 model Vela "
             "compiled (before Vela); the NPU figures are Vela's own estimates")
# A warning Vela prints for each op it leaves on the CPU, then one "Reason:" line per failed constraint.
_CPU_WARNING = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'$")


def npu_configs() -> list[str]:
    """The accelerator configs as Vela names them (`vela --accelerator-config`)."""
    from ethosu.vela.architecture_features import Accelerator

    return Accelerator.member_list()


def check_npu(npu: str) -> str:
    """Refuse an unknown NPU config before any work, naming Vela's own list."""
    configs = npu_configs()
    if npu not in configs:
        raise InputError(f"unknown --npu {npu!r}: choose one of {', '.join(configs)} (--npu list)")
    return npu


@dataclass
class CpuOp:
    """An op of the int8 model Vela left to TFLM on the Cortex-M, and Vela's reasons."""

    op: str  # TFLite builtin
    output: str  # its output tensor's name
    macs: int
    reasons: list[str] = field(default_factory=list)


@dataclass
class EthosUResult:
    """One Vela compilation: the optimised flatbuffer and Vela's figures for one NPU config."""

    npu: str
    system_config: str
    memory_mode: str
    clock_hz: float
    tflite_bytes: bytes
    ops_total: int  # ops of the int8 model Vela was given
    npu_ops: int  # of them, those mapped into ethos-u command streams
    cpu_ops: list[CpuOp]
    macs_total: int  # hub.check.layers' MAC count of the int8 model
    sram_bytes: int  # Vela's "Total SRAM used": its scratch arena
    flash_bytes: int  # Vela's flash use (weights, scales, command streams)
    dram_bytes: int  # Vela's DRAM use (Dedicated_Sram memory modes keep the arena and weights there)
    cycles: int  # Vela's estimate of one inference, NPU and memory accesses
    npu_cycles: int
    inference_s: float
    vela_cpu_ops: int  # Vela's own "CPU operators" / "NPU operators" counts (its graph after lowering)
    vela_npu_ops: int
    vela_macs: int
    scratch_bytes: int  # the scratch tensors in the optimised .tflite (TFLM allocates them in its arena)
    arena_bytes: int  # TFLM's arena for the optimised .tflite, estimated: scratch + CPU ops' tensors
    summary: dict[str, str] = field(default_factory=dict)  # Vela's summary CSV row as written

    @property
    def cpu_macs(self) -> int:
        return sum(op.macs for op in self.cpu_ops)

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in ("tflite_bytes", "summary")}
        npu_macs = self.macs_total - self.cpu_macs
        doc.update(tflite_size=len(self.tflite_bytes), npu_macs=npu_macs, cpu_macs=self.cpu_macs,
                   npu_op_share=round(self.npu_ops / self.ops_total, 4) if self.ops_total else None,
                   npu_mac_share=round(npu_macs / self.macs_total, 4) if self.macs_total else None,
                   inference_ms=round(self.inference_s * 1e3, 4), note=HOST_NOTE)
        return doc


def compile_model(int8_tflite: bytes, npu: str) -> EthosUResult:
    """Vela on an int8 flatbuffer for one NPU config, in a child process; IncompatibleError if it fails."""
    with tempfile.TemporaryDirectory(prefix="hub-vela-") as tmp:
        model = Path(tmp) / "model.tflite"
        model.write_bytes(int8_tflite)
        result = run_python_module("ethosu.vela", vela_args(model, npu, Path(tmp) / "out"),
                                   timeout_s=VELA_TIMEOUT_S, memory_mb=VELA_MEMORY_MB)
        if result.returncode != 0 or result.timed_out:
            why = "timed out" if result.timed_out else (result.last_error_line() or result.stdout.strip()[-300:])
            raise IncompatibleError(f"Vela could not compile the int8 model for {npu}: {why}")
        out = Path(tmp) / "out"
        optimised = (out / "model_vela.tflite").read_bytes()
        summary = _read_csv(next(out.glob("model_summary_*.csv")))[0]
        layers = _read_csv(out / "model_per-layer.csv")
    return _result(npu, int8_tflite, optimised, summary, layers, cpu_reasons(result.stdout))


def vela_args(model: Path, npu: str, out_dir: Path) -> list[str]:
    """Vela's command line, as a user would type it (the bench runs the same for comparison)."""
    return [str(model), "--accelerator-config", npu, "--output-dir", str(out_dir), "--show-cpu-operations",
            "--verbose-performance"]


def cpu_reasons(stdout: str) -> dict[str, list[str]]:
    """{output tensor name: Vela's reasons} from its supported-operators warnings."""
    reasons: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        match = _CPU_WARNING.match(line.strip())
        if match:
            current = reasons.setdefault(match.group(2), [])
        elif current is not None and line.startswith("Reason:"):
            current.append(line[len("Reason:"):].strip())
        else:
            current = None
    return reasons


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _result(npu: str, int8_tflite: bytes, optimised: bytes, summary: dict[str, str], layers: list[dict[str, str]],
            reasons: dict[str, list[str]]) -> EthosUResult:
    source, compiled = read_tflite(int8_tflite), read_tflite(optimised)
    macs = {layer.name: layer.macs for layer in tflite_layers(source).layers}
    cpu = [CpuOp(op.name, compiled.tensors[op.outputs[0]].name, macs.get(compiled.tensors[op.outputs[0]].name, 0),
                 reasons.get(compiled.tensors[op.outputs[0]].name, []))
           for op in compiled.ops if not (op.name == "CUSTOM" and op.custom_code == "ethos-u")]
    scratch = {i for op in compiled.ops if op.custom_code == "ethos-u" for i in op.inputs[2:4] if i >= 0}
    kib = 1024
    return EthosUResult(
        npu=npu, system_config=summary["system_config"], memory_mode=summary["memory_mode"],
        clock_hz=float(summary["core_clock"]), tflite_bytes=optimised, ops_total=len(source.ops),
        npu_ops=len(source.ops) - len(cpu), cpu_ops=cpu, macs_total=sum(macs.values()),
        sram_bytes=round(float(summary["sram_memory_used"]) * kib),
        flash_bytes=round((float(summary["off_chip_flash_memory_used"])
                           + float(summary["on_chip_flash_memory_used"])) * kib),
        dram_bytes=round(float(summary["dram_memory_used"]) * kib), cycles=round(float(summary["cycles_total"])), npu_cycles=round(float(summary["cycles_npu"])),
        inference_s=float(summary["inference_time"]),
        vela_cpu_ops=sum(row["Target"] == "CPU" for row in layers),
        vela_npu_ops=sum(row["Target"] == "NPU" for row in layers), vela_macs=int(float(summary["nn_macs"])),
        scratch_bytes=sum(prod(compiled.tensors[i].shape) for i in scratch), arena_bytes=_arena(compiled),
        summary=summary)


def _arena(compiled) -> int:
    """TFLM's arena for the optimised model, estimated by hub.check.layers' planner (Vela's scratch tensors included)."""
    return tflite_layers(compiled).arena(None)[0]


def write_outputs(result: EthosUResult, ident: str, folder: Path, layouts: list[InputLayout] | None = None) -> list[str]:
    """model_vela.tflite and its firmware files (a resolver with AddEthosU and the CPU ops left over) into
    `folder`. Returns the firmware file names (the report's ethos-u row: hub.report.portability.ethos_u_row)."""
    (folder / "model_vela.tflite").write_bytes(result.tflite_bytes)
    constants = {"kEthosUScratchSize": (result.scratch_bytes, f"Vela's scratch tensors for {result.npu} "
                                        f"({result.memory_mode}); TFLM places them in the arena")}
    note = ("hub: estimated, not measured (the host cannot run the ethos-u op): TFLM's planner over the "
            "Vela model's tensors, scratch included, + 10 % headroom, whole KB")
    files = export_firmware(result.tflite_bytes, ident, folder, recommended_arena(result.arena_bytes), note,
                            constants, layouts)
    return ["model_vela.tflite", *(f.name for f in files)]


# ---------------------------------------------------------------- hub check --target ethos-u

CPU_HINT = "TFLM runs it on the Cortex-M: the resolver registers its kernel beside AddEthosU"


def check(result: CheckResult, npu: str, tflite_bytes: bytes | None) -> CheckResult:
    """A new CheckResult: the TFLM check `result` with, per node, whether Vela maps it to the NPU ("npu" /
    "cpu" in each node, an info finding with Vela's reason for each CPU node); `result` is left as it is.

    A .tflite is compiled by Vela itself (exact); an ONNX graph is judged by the TFLite ops hub check
    predicts for each node against Vela's own table of the ops it maps (regor.tflite_operator_constraints),
    whose constraints decide only at compile time. A Vela-compiled .tflite is read as it is: its ethos-u
    ops run on the NPU through Arm's driver, the rest on TFLM."""
    nodes = [dict(node) for node in result.nodes]
    if tflite_bytes is not None and any(op.custom_code == "ethos-u" for op in read_tflite(tflite_bytes).ops):
        findings = [_driver_note(f) if f.op == "CUSTOM" and "ethos-u" in f.message else f for f in result.findings]
        for node in nodes:
            node["npu"] = "npu" if node["op"] == "CUSTOM:ethos-u" else "cpu"
    elif tflite_bytes is not None:
        findings = result.findings + _compiled_findings(nodes, tflite_bytes, npu)
    else:
        findings = result.findings + _table_findings(nodes, npu)
    return replace(result, target=npu, findings=findings, nodes=nodes,
                   compatible=not any(f.severity == "error" for f in findings))


def _driver_note(finding: Finding) -> Finding:
    return replace(finding, severity="info", hint="",
                   message=f"runs on the Ethos-U NPU; needs {CUSTOM_OPS['ethos-u'].needs}")


def _compiled_findings(nodes: list[dict], tflite_bytes: bytes, npu: str) -> list[Finding]:
    """Info findings for the nodes Vela leaves on the CPU; marks each node of `nodes` (check's own copies)."""
    cpu = {op.output: op for op in compile_model(tflite_bytes, npu).cpu_ops}
    findings = []
    for node in nodes:
        op = cpu.get(node["name"].split(" ", 1)[-1])  # analyse_tflite labels an op "#i <output>"
        node["npu"] = "cpu" if op else "npu"
        if op:
            findings.append(Finding(node["name"], node["op"], node["tflite_ops"], "info",
                                    f"stays on the CPU: Vela: {'; '.join(op.reasons) or 'no reason given'}", CPU_HINT))
    return findings


def _table_findings(nodes: list[dict], npu: str) -> list[Finding]:
    """Info findings for the nodes with a TFLite op Vela does not map; marks each node of `nodes` (check's copies)."""
    mapped = vela_op_table(npu)
    findings = []
    for node in nodes:
        missing = [op for op in node["tflite_ops"] if op not in mapped]
        node["npu"] = "cpu" if missing else ("npu" if node["tflite_ops"] else "fused")
        if missing:
            findings.append(Finding(node["name"], node["op"], node["tflite_ops"], "info",
                                    f"stays on the CPU: Vela maps no {', '.join(missing)} (Unsupported opType)",
                                    CPU_HINT))
    return findings


def vela_op_table(npu: str) -> dict[str, list[str]]:
    """{TFLite op: its constraints} Vela maps for this NPU, from Vela's compiler core itself."""
    from ethosu import regor

    return regor.tflite_operator_constraints("EthosU85" if npu.startswith("ethos-u85") else "EthosU55")
