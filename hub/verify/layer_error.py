"""The per-layer error profile of a quantized model: which ops lose the signal, measured, not guessed.

`profile_layers` takes what the pipeline already has (the normalised ONNX graph, the calibration and
held-out samples, the converted model and the options it was converted with) and returns a LayerProfile:
for every quantized op of the converted model, its output against the float model's tensor on the
held-out samples, as converted and with only that op quantized (TensorFlow's QuantizationDebugger's two
views). The measuring runs in hub.verify.layer_error_worker, a child: it needs TensorFlow, which the
parent never imports.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from hub.artifacts import ConvertedModel, LayerError, LayerProfile, NormalisedModel
from hub.child import run_python_module
from hub.convert.calibration import CalibrationSet
from hub.convert.converter import ConvertOptions, memory_limit_mb, write_job
from hub.convert.layout import decide_layouts
from hub.errors import IncompatibleError
from hub.tflite.model import TFLiteModel, read_tflite
from hub.verify.channel_stats import cosine, rmse_over_scale

PROFILE_TIMEOUT_S = 600.0


def profile_layers(model: NormalisedModel, calibration: CalibrationSet, converted: ConvertedModel,
                   options: ConvertOptions, isolated_budget_s: float | None = None) -> LayerProfile:
    """The per-layer error profile of `converted` (made from `model` with `calibration` and `options`), on
    the held-out samples; the isolated view (one quantization per op) of as many ops as `isolated_budget_s`
    allows, those adding the most error as converted first (None: every op). Raises IncompatibleError when the
    measuring child fails."""
    if options.quantize != "int8":  # measured: mlir_quantize's int16 debug model fails ("Model input is not
        # dequantized"); lite.py quantizes int16 activations with its older quantizer, which has no NumericVerify
        raise IncompatibleError(f"the per-layer error profile measures int8 models, not {options.quantize}")
    if not calibration.held_out:
        raise IncompatibleError("the layer profile needs held-out samples; there are none")
    with tempfile.TemporaryDirectory(prefix="hub-layers-") as tmp:
        job = Path(tmp)
        write_job(job, model, calibration, options, converted.input_layouts or decide_layouts(model.onnx_model),
                  isolated_budget_s=isolated_budget_s)
        np.savez(job / "held_out.npz", **calibration.held_out)
        child = run_python_module("hub.verify.layer_error_worker", [str(job)], timeout_s=PROFILE_TIMEOUT_S,
                                  memory_mb=options.memory_mb or memory_limit_mb(model.onnx_model), cwd=tmp)
        result = job / "result.json"
        if child.returncode != 0 or not result.exists():
            raise IncompatibleError("the per-layer error profile could not be measured: "
                                    + (child.last_error_line() or f"exit code {child.returncode}"))
        views = json.loads(result.read_text())["views"]
    samples = len(next(iter(calibration.held_out.values())))
    return LayerProfile(layers=layer_errors(read_tflite(converted.tflite_bytes), views["converted"],
                                            views["isolated"]),
                        samples=samples, quantize=options.quantize, isolated_budget_s=isolated_budget_s)


def layer_errors(model: TFLiteModel, converted: dict[str, dict], isolated: dict[str, dict]) -> tuple[LayerError, ...]:
    """The worker's sums per tensor name -> one LayerError per quantized op of `model`, in op order."""
    writers = {model.tensors[i].name: op for op in model.ops for i in op.outputs}
    rows = []
    for name, sums in converted.items():
        op, alone = writers.get(name), isolated.get(name)
        rows.append(LayerError(
            op_index=op.index if op is not None else -1, op=op.name if op is not None else "?", tensor=name,
            rmse_over_scale=rmse_over_scale(sums), cosine=cosine(sums),
            isolated_cosine=cosine(alone) if alone else None,
            isolated_rmse_over_scale=rmse_over_scale(alone) if alone else None, scale=sums["scale"]))
    return tuple(sorted(rows, key=lambda r: (r.op_index < 0, r.op_index)))


__all__ = ["LayerError", "LayerProfile", "profile_layers", "layer_errors"]
