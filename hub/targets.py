"""Targets and quantize modes: one table, validated once for every command.

Every command that takes `--target` or `--quantize` calls `resolve` before any
work is spent; the stages then receive a `Quantize` member (a str, so it still
compares and serialises as "int8") instead of a bare string to interpret.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from hub.errors import InputError


class Quantize(str, Enum):
    """What the converted model computes in: full-integer int8, int16 activations with int8 weights, or float."""

    INT8 = "int8"
    INT16X8 = "int16x8"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    # int8, with the layers int8 loses most promoted to int16 activations until a target holds, each step
    # measured on TFLM (hub.optimize.precision): a mixed int8/int16x8 model
    AUTO = "auto"

    def __str__(self) -> str:
        return self.value

    @property
    def quantized(self) -> bool:
        """Calibrated integer activations (int8 or int16x8)."""
        return self in (Quantize.INT8, Quantize.INT16X8, Quantize.AUTO)

    @property
    def converted_as(self) -> Quantize:
        """The mode the converter runs: auto starts from int8 (and converts int16x8 only when int8 misses)."""
        return Quantize.INT8 if self is Quantize.AUTO else self

    @property
    def widest(self) -> Quantize:
        """The mode whose tensors bound this one's size (hub check's arena estimate): auto's widest is int16x8."""
        return Quantize.INT16X8 if self is Quantize.AUTO else self

    @property
    def activation_dtype(self) -> str:
        """The type float tensors of the source have in the converted model (auto: int8 outside promoted layers)."""
        return {"int8": "int8", "int16x8": "int16", "float32": "float32", "float16": "float16",
                "auto": "int8"}[self.value]


@dataclass(frozen=True)
class Target:
    name: str
    modes: tuple[Quantize, ...]  # the quantize modes it runs
    verified_on_tflm: bool  # hub convert proves the output on the TFLM interpreter (and hub check models it)
    refusals: dict[str, str] = field(default_factory=dict)  # mode -> why the target cannot run it


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("tflm", (Quantize.INT8, Quantize.INT16X8, Quantize.AUTO, Quantize.FLOAT32), True,
           {"float16": "TFLite Micro has no float16 kernels: use int8 (default) or float32",
            "dynamic": "TFLite Micro rejects hybrid (dynamic-range) models: use int8 (default) or float32"}),
    # Arm Ethos-U NPUs: the int8 model is verified on TFLM, then compiled by Vela (hub.firmware.ethos_u).
    Target("ethos-u", (Quantize.INT8,), True,
           {"int16x8": "hub compiles int8 models for Ethos-U (Vela maps int16 activations op by op): use int8",
            "auto": "auto mixes int16 layers into the int8 model, and hub compiles int8 models only for Ethos-U "
                    "(Vela's int16 support is op by op and not verified here): use int8, or --target tflm",
            "float32": "the Ethos-U NPU runs integer models only: use int8 (default)",
            "float16": "the Ethos-U NPU runs integer models only: use int8 (default)",
            "dynamic": "the Ethos-U NPU runs full-integer models only: use int8 (default)"}),
    Target("tflite", tuple(q for q in Quantize if q is not Quantize.AUTO), False,
           {"dynamic": "dynamic-range output is not offered: use int8, float16 or float32",
            "auto": "auto measures every mix on the TFLM interpreter, which --target tflite does not run: use "
                    "--target tflm"}),
)}
CHECKED_TARGETS = tuple(name for name, t in TARGETS.items() if t.verified_on_tflm)  # what hub check models


def resolve(target: str, quantize: str, *, command: str = "convert") -> tuple[Target, Quantize]:
    """Validate a --target/--quantize pair once, before any work; InputError names the valid choices."""
    allowed = CHECKED_TARGETS if command == "check" else tuple(TARGETS)
    if target not in allowed:
        raise InputError(f"unknown --target {target!r} for hub {command}: choose one of {', '.join(allowed)}")
    row = TARGETS[target]
    if quantize in row.refusals:
        raise InputError(f"--quantize {quantize} is refused for --target {target}: {row.refusals[quantize]}")
    if quantize not in [m.value for m in row.modes]:
        raise InputError(f"unknown --quantize {quantize!r} for --target {target}: choose one of "
                         f"{', '.join(m.value for m in row.modes)}")
    return row, Quantize(quantize)
