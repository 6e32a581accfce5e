"""Compress stage (`hub convert --compress`): TFLM look-up-table compression of clustered weights.

A filter whose values take few distinct values (after `hub optimize --cluster N`) is stored as
ceil(log2 N)-bit indices plus value tables, and a DECODE op (TFLM_DECODE) rebuilds it in the arena
before its consumer (hub.knowledge.compression says what TFLM accepts). The work is done by the pinned
wheel's own compressor (tflite_micro.compression); this stage decides which tensors to give it: the
filters of the ops in WEIGHT_INPUT, with tables that follow the tensor's quantization, at the fewest bits
their values need, and only where the result is smaller. Compression is lossless by construction, so
hub.api checks it: the compressed model's outputs on TFLM must equal the uncompressed model's bit for bit.
"""
from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from hub.artifacts import Verification
from hub.errors import IncompatibleError
from hub.knowledge import compression as knowledge
from hub.tflite.model import TensorInfo, TFLiteModel, read_tflite


@dataclass
class CompressedTensor:
    tensor: str
    op: str  # the consumer, e.g. "CONV_2D"
    shape: list[int]
    values: int  # distinct values in its largest table
    bits: int  # index width
    tables: int  # 1, or one per channel
    bytes_before: int
    bytes_after: int  # indices + value tables + DECODE's metadata header


@dataclass(frozen=True)
class OnTFLM:
    """One model's figures on the TFLM interpreter: smallest arena, mean invoke time on this host."""

    arena_bytes: int | None = None
    invoke_us_host: float | None = None

    @classmethod
    def of(cls, verification: Verification) -> OnTFLM:
        return cls(verification.memory.arena_bytes, verification.tflm.invoke_us_host)


@dataclass(frozen=True)
class Compression:
    """What --compress did; `measured` gives it the TFLM figures of both models (hub.api, once TFLM has run them)."""

    tensors: list[CompressedTensor]
    skipped: list[dict[str, str]]  # {"tensor", "op", "reason"}
    model_bytes_before: int
    model_bytes_after: int
    weight_bytes_before: int  # every constant buffer: filters, biases, and after compression indices and tables
    weight_bytes_after: int
    before: OnTFLM = field(default_factory=OnTFLM)  # the uncompressed model, same operator ordering
    after: OnTFLM = field(default_factory=OnTFLM)

    def measured(self, before: Verification | None = None, after: Verification | None = None) -> Compression:
        """This compression with the uncompressed (`before`) and/or compressed (`after`) model's TFLM figures:
        a new value."""
        return replace(self, before=self.before if before is None else OnTFLM.of(before),
                       after=self.after if after is None else OnTFLM.of(after))

    @property
    def decode_arena_bytes(self) -> int | None:
        """What DECODE's rebuilt filters add to the arena."""
        if self.before.arena_bytes is None or self.after.arena_bytes is None:
            return None
        return max(0, self.after.arena_bytes - self.before.arena_bytes)

    @property
    def weight_ratio(self) -> float:
        return round(self.weight_bytes_before / max(self.weight_bytes_after, 1), 3)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "weight_ratio": self.weight_ratio, "decode_arena_bytes": self.decode_arena_bytes}


def compress(tflite_bytes: bytes) -> tuple[bytes, Compression]:
    """The model with every filter that shrinks under a look-up table compressed; IncompatibleError when none
    does (the weights are not clustered)."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    model = read_tflite(tflite_bytes)
    arrays = model_editor.read(tflite_bytes).subgraphs[0].tensors
    chosen, skipped = [], []
    for index, op in _filters(model):
        tensor = model.tensors[index]
        planned = _plan(tensor, op, arrays[index].array)
        if isinstance(planned, str):
            skipped.append({"tensor": tensor.name, "op": op, "reason": planned})
        else:
            chosen.append((index, planned))
    if not chosen:
        reasons = "; ".join(f"{s['tensor']}: {s['reason']}" for s in skipped[:3]) or "the model has no filters"
        raise IncompatibleError(f"--compress found no weights a look-up table shrinks ({reasons}); cluster them "
                                "first: hub optimize MODEL --data ... --cluster 16")
    compressed = _run_compressor(tflite_bytes, model, chosen)
    return compressed, Compression(
        tensors=[c for _, c in chosen], skipped=skipped, model_bytes_before=len(tflite_bytes),
        model_bytes_after=len(compressed), weight_bytes_before=weight_bytes(model),
        weight_bytes_after=weight_bytes(read_tflite(compressed)))


def weight_bytes(model: TFLiteModel) -> int:
    return sum(t.data_bytes for t in model.tensors if t.is_constant)


def _filters(model: TFLiteModel) -> list[tuple[int, str]]:
    """(tensor index, consumer op) of each constant filter whose every use is a WEIGHT_INPUT position."""
    uses: dict[int, set[tuple[str, int]]] = {}
    for op in model.ops:
        for position, index in enumerate(op.inputs):
            if index >= 0 and model.tensors[index].is_constant:
                uses.setdefault(index, set()).add((op.name, position))
    return [(index, next(iter(where))[0]) for index, where in uses.items()
            if all(knowledge.WEIGHT_INPUT.get(name) == position for name, position in where)]


def _plan(tensor: TensorInfo, op: str, array: np.ndarray) -> CompressedTensor | str:
    """The compression of one filter, or why it is left as it is."""
    axis = tensor.quantized_dimension if tensor.per_channel else None
    if axis is not None and not knowledge.channel_axis_ok(axis, array.ndim):
        return f"per-channel along axis {axis}: TFLM's tables run along the first or last axis only"
    slices = [array] if axis is None else list(np.moveaxis(array, axis, 0))
    values = max(len(np.unique(s)) for s in slices)
    bits = max(1, math.ceil(math.log2(values)))
    if bits > knowledge.MAX_INDEX_BITS:
        return f"{values} distinct values: TFLM's indices are at most {knowledge.MAX_INDEX_BITS} bits"
    after = math.ceil(array.size * bits / 8) + len(slices) * values * array.itemsize + knowledge.DCM_BYTES
    if after >= array.nbytes:
        return (f"{len(slices)} table(s) of {values} values would not shrink {array.size} weights "
                f"({after:,} B >= {array.nbytes:,} B)")
    return CompressedTensor(tensor.name, op, list(array.shape), values, bits, len(slices), array.nbytes, after)


def _run_compressor(tflite_bytes: bytes, model: TFLiteModel, chosen: list[tuple[int, CompressedTensor]]) -> bytes:
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    builder = compression.SpecBuilder()
    for index, planned in chosen:
        tensor = model.tensors[index]
        mode = spec.PerChannel(tensor.quantized_dimension) if tensor.per_channel else spec.PerTensor()
        builder.add_tensor(0, index).with_lut(planned.bits, mode)
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")  # its notes ("expansion", spare bits) are covered by _plan
        try:
            return bytes(compression.compress(tflite_bytes, builder.build()))
        except Exception as exc:  # CompressionError, or the alignment tool failing
            raise IncompatibleError(f"TFLM's compressor refused the model: {exc}") from None


def check_lossless(before: list[list[np.ndarray]], after: list[list[np.ndarray]]) -> None:
    """The compressed model must compute exactly what the uncompressed one does on TFLM."""
    for s, (outs_before, outs_after) in enumerate(zip(before, after)):
        for o, (a, b) in enumerate(zip(outs_before, outs_after)):
            if a.shape != b.shape or not np.array_equal(a, b):
                diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape else "shape"
                raise IncompatibleError(f"the compressed model's output {o} differs from the uncompressed model's "
                                        f"on TFLM (sample {s}, max difference {diff}): DECODE rebuilt other weights; "
                                        "not written")
