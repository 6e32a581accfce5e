"""Board-fit search (`hub optimize MODEL --data ... --board B`): the most accurate model that fits a board.

Candidates combine a pruning level with a quantization variant (int16x8, auto, int8, int8 after QAT, int8 with
the filters clustered to 16 or 4 values and compressed into TFLM look-up tables). Every candidate is
converted by hub convert and measured on TFLM: its arena (+ the runtime's RAM the board table states)
against the board's RAM, its flatbuffer (+ the kernels it registers, hub.knowledge.kernel_flash) against
the board's flash, its accuracy on the validation set run on the interpreter. Levels go from the least
pruning to the most; the search stops after the first level where some candidate fits, because more
pruning only removes capacity: it cannot fit a more accurate model.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hub.errors import HubError
from hub.knowledge.boards import board_fit
from hub.knowledge.kernel_flash import op_key
from hub.optimize.training import export_onnx, prune, scores
from hub.tflite.model import read_tflite
from hub.verify.tflm import tflm_outputs

PRUNE_LEVELS = (0.0, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class Variant:
    quantize: str
    cluster: int | None = None
    qat: bool = False

    @property
    def label(self) -> str:
        return self.quantize + (f" + cluster {self.cluster}" if self.cluster else "") + (" + QAT" if self.qat else "")


# auto: int8 with the layers it loses most in int16 (hub.optimize.precision), between int8's and int16x8's RAM
VARIANTS = (Variant("int16x8"), Variant("auto"), Variant("int8"), Variant("int8", qat=True),
            Variant("int8", cluster=16), Variant("int8", cluster=4))


@dataclass
class Candidate:
    prune: float
    variant: Variant
    flash_bytes: int | None = None  # the flatbuffer
    arena_bytes: int | None = None  # measured on TFLM
    flash_need: int | None = None  # + the kernels it registers
    ram_need: int | None = None  # + the runtime's RAM
    fits: bool | None = None
    accuracy: float | None = None  # int8/int16x8 on TFLM: top-1 vs labels, else agreement with the teacher
    error: str | None = None
    seconds: float = 0.0
    folder: Path | None = None  # its output folder, while the search's work folder lives
    report: Any = None  # its ConvertReport

    @property
    def label(self) -> str:
        return f"prune {self.prune:.0%}, {self.variant.label}"

    def to_dict(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if k not in ("folder", "report")}
        doc.update(variant=self.variant.label, label=self.label)
        return doc


@dataclass
class SearchContext:
    """What the search needs from hub.optimize.run: the teacher, the data, and how to train and convert."""

    teacher: Any  # hub.optimize.run.Trainable
    train: Any  # hub.convert.dataset.Dataset
    val: Any
    teacher_val: np.ndarray
    request: Any  # OptimizeRequest
    output_name: str
    ident: str  # the firmware files' C name
    convert: Callable[..., Any]  # hub.api.convert
    distill: Callable[[Any], Any]  # trains a student towards the teacher (hub.optimize.run._train)
    cluster: Callable[[Any, int], Any]  # clusters and fine-tunes a copy (hub.optimize.run._cluster)
    qat: Callable[[Any], Any]  # quantization-aware fine-tuning of a copy


def search(ctx: SearchContext, board: Any, work: Path, progress: Any,
           levels: tuple[float, ...] = PRUNE_LEVELS) -> tuple[list[Candidate], Candidate | None]:
    """Measure candidates level by level; (every candidate, the most accurate that fits or None)."""
    import torch

    candidates: list[Candidate] = []
    example = torch.from_numpy(ctx.train.x[:1])
    for level in levels:
        student = ctx.teacher.module
        if level > 0:
            with progress.stage("prune", f"Pruning {level:.0%} of the channels"):
                student = prune(copy.deepcopy(ctx.teacher.module), example, level, round_to=ctx.request.round_to)
            student = ctx.distill(student)
        for variant in VARIANTS:
            candidate = Candidate(level, variant)
            with progress.stage("candidate", f"Measuring {candidate.label} on TFLM"):
                _measure(ctx, student, candidate, board, work / f"c{len(candidates)}")
            candidates.append(candidate)
        if any(c.fits for c in candidates):
            break
    fitting = [c for c in candidates if c.fits and c.accuracy is not None]
    chosen = max(fitting, key=lambda c: (c.accuracy, -c.flash_need)) if fitting else None
    return candidates, chosen


def _measure(ctx: SearchContext, student: Any, candidate: Candidate, board: Any, folder: Path) -> None:
    start = time.perf_counter()
    variant = candidate.variant
    try:
        model = student
        if variant.qat:
            model = ctx.qat(copy.deepcopy(student))
        if variant.cluster:
            model = ctx.cluster(copy.deepcopy(student), variant.cluster)
        folder.mkdir(parents=True)
        onnx_path, calibration = folder / "student.onnx", folder / "calibration.npz"
        export_onnx(model, ctx.teacher.spec, ctx.output_name, onnx_path)
        np.savez(calibration, **{ctx.teacher.spec.name: ctx.train.x})
        report = ctx.convert(onnx_path, quantize=variant.quantize, calibration=calibration, out=folder / "out",
                             name=ctx.ident, compress=variant.cluster is not None,
                             per_tensor_weights=variant.cluster is not None and ctx.request.cluster_scope == "layer")
        candidate.flash_bytes, candidate.arena_bytes = report.model.tflite_bytes, report.verification.memory.arena_bytes
        data = (folder / "out" / "model.tflite").read_bytes()
        outputs = tflm_outputs(data, ctx.val.x, ctx.teacher.spec.name, tuple(report.model.outputs[0]["shape"]))
        s = scores(outputs, ctx.teacher_val, ctx.val.y, ctx.teacher.reconstruction)
        candidate.accuracy = s["accuracy"] if s["accuracy"] is not None else s["agreement"]
        if candidate.arena_bytes is not None:
            fit = board_fit(board, candidate.arena_bytes, candidate.flash_bytes, _ops(data))
            candidate.ram_need, candidate.flash_need, candidate.fits = fit.ram_needed, fit.flash_needed, fit.fits
        candidate.folder, candidate.report = folder / "out", report
    except HubError as exc:
        candidate.error = str(exc).splitlines()[0]
    candidate.seconds = round(time.perf_counter() - start, 1)


def _ops(tflite_bytes: bytes) -> list[str]:
    return [op_key(op.name, op.custom_code) for op in read_tflite(tflite_bytes).ops]


def section(candidates: list[Candidate], chosen: Candidate | None, board: Any,
            levels: tuple[float, ...]) -> dict[str, Any]:
    """report.json's `optimize.search`: every candidate, the chosen one, and whether the source model fits."""
    unoptimised = next((c for c in candidates if c.prune == 0 and c.variant == Variant("int8")), None)
    return {"board": board.to_dict(), "levels": list(levels), "variants": [v.label for v in VARIANTS],
            "candidates": [c.to_dict() for c in candidates],
            "chosen": None if chosen is None else chosen.label,
            "unoptimised_fits": None if unoptimised is None else unoptimised.fits,
            "stopped": "after the first pruning level with a candidate that fits" if chosen else "no candidate fits"}


def closest(candidates: list[Candidate]) -> str:
    """One line on the smallest candidate measured, for the error when none fits."""
    measured = [c for c in candidates if c.ram_need is not None]
    if not measured:
        return "no candidate could be measured (" + (candidates[-1].error if candidates else "none tried") + ")"
    best = min(measured, key=lambda c: (c.flash_need, c.ram_need))
    return (f"the smallest, {best.label}, needs {best.flash_need:,} B of flash and {best.ram_need:,} B of RAM "
            f"(after {len(candidates)} candidates)")
