"""The operations behind the CLI, callable from Python: `import hub; hub.convert(...)`.

Each function runs the pipeline stages in order and returns plain data
(dicts ready for JSON); the CLI only parses flags and prints.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hub.artifacts import LoadOptions, SourceModel
from hub.errors import HubError, IncompatibleError, InputError
from hub.progress import Progress, warn
from hub.targets import resolve

def load_options(
    input_shapes: list[str] | dict | None = None,
    factory: str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
) -> LoadOptions:
    shapes = input_shapes if isinstance(input_shapes, dict) else parse_input_shapes(input_shapes or [])
    return LoadOptions(input_shapes=shapes, factory=factory, trust_pickle=trust_pickle, trust_code=trust_code)


def parse_input_shapes(values: list[str]) -> dict[str | None, tuple[int, ...]]:
    """`--input-shape [NAME=]1,3,32,32` (repeatable) -> {name or None: shape}."""
    shapes: dict[str | None, tuple[int, ...]] = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(","))
        except ValueError:
            raise InputError(f"--input-shape {value!r} is not [NAME=]D0,D1,... with integer dimensions") from None
        if not shape or any(d <= 0 for d in shape) or len(shape) > 8:
            raise InputError(f"--input-shape {value!r} needs 1 to 8 positive dimensions")
        if _elements(shape) > 2**28:
            raise InputError(f"--input-shape {value!r} is absurdly large ({_elements(shape):,} elements)")
        shapes[name or None] = shape
    return shapes


def _elements(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def identifier_from(path: Path) -> str:
    """A C identifier from a file name: resnet-tiny.pt -> resnet_tiny."""
    stem = path.name.split(".")[0] if path.is_file() or path.suffix else path.name
    ident = re.sub(r"\W+", "_", stem).strip("_").lower() or "model"
    return f"m_{ident}" if ident[0].isdigit() else ident


def load_source(model: str | Path, options: LoadOptions) -> SourceModel:
    import adapters

    return adapters.load(model, options)


def convert(
    model: str | Path,
    *,
    target: str = "tflm",
    quantize: str = "int8",
    calibration: str | Path | None = None,
    input_range: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    force: bool = False,
    options: LoadOptions | None = None,
    min_cosine: float | None = None,
    per_channel_dense: bool = False,
    progress: Progress | None = None,
    passes: list[str] | None = None,
) -> dict[str, Any]:
    """Convert a model for `target`, verify it, write the output folder; returns report.json's content.

    Raises IncompatibleError (exit 1) when TFLM cannot run the result, when the converter
    changed the model's meaning (see hub.fidelity), or when fidelity falls below
    `min_cosine`; the output folder is still written, with the reasons. `passes` limits
    the normalisation passes that run (default all; tests use it to reach onnx2tf's own lowering).
    """
    from hub import calibration as calib
    from hub import convert as convert_stage
    from hub.convert import ConvertOptions
    from hub.output import check_destination

    progress = progress or Progress(enabled=False)
    options = options or LoadOptions()
    path = Path(model)
    target_row, quantize = resolve(target, quantize)  # refuse before any work is spent
    value_range = calib.parse_input_range(input_range)
    out_dir = Path(out) if out else Path.cwd() / f"{identifier_from(path)}_{target}"
    check_destination(out_dir, force)
    ident = _firmware_name(name or identifier_from(path))

    with progress.stage("load", f"Loading {path.name}"):
        source = load_source(path, options)
    if source.framework == "tflite":
        raise InputError("this is already a .tflite model: use hub check, hub verify or hub export on it", path)
    with progress.stage("normalise", "Normalising the ONNX graph"):
        normalised = _normalise(source, options, passes)
    check = None
    if target_row.verified_on_tflm:  # the check's tables are TFLM's; mobile LiteRT has every builtin
        with progress.stage("analyse", "Checking TFLM compatibility"):
            check = _analyse(normalised.onnx_model, target, quantize)
    calibration_set = calib.build_calibration(normalised.inputs, calibration, value_range, source.source_layouts)
    if calibration_set.synthetic and quantize.quantized:
        warn(f"{path.name}: calibrating on synthetic data over [{value_range[0]}, {value_range[1]}]; "
             "pass --calibration with real samples for production accuracy")
    with progress.stage("convert", f"Converting to {quantize} TFLite with onnx2tf"):
        try:
            converted = convert_stage.convert(normalised, calibration_set, ConvertOptions(
                target, quantize, per_channel_dense=per_channel_dense))
        except IncompatibleError as exc:
            raise IncompatibleError(exc.message + _blocking_hint(check), path) from None
        converted, tflite_passes = _tflite_passes(converted)

    report: dict[str, Any] = {
        "target": target,
        "quantize": quantize,
        "source": {"path": str(path), "framework": source.framework},
        "model": _model_section(converted.tflite_bytes),
        "calibration": converted.calibration,
        "passes": [vars(p) for p in normalised.passes + tflite_passes],
        "check": check.to_dict() if check else None,
    }
    verification = None
    if target_row.verified_on_tflm:
        with progress.stage("verify", "Verifying on the TFLM interpreter"):
            verification = _verify(converted.tflite_bytes, normalised.onnx_model, calibration_set.held_out, min_cosine)
        _judge_fidelity(path, ConvertOptions(target, quantize, per_channel_dense=per_channel_dense), normalised,
                        calibration_set, converted.tflite_bytes, verification, progress)
        report.update(verification.to_dict())
        report["findings"] = [f.to_dict() for f in verification.findings]

    _write_output(out_dir, force, report, normalised, converted, verification, ident, progress)
    report["output"] = str(out_dir)
    if verification is not None and not verification.ok:
        raise IncompatibleError(_verification_failure(verification), path)
    return report


def _write_output(out_dir: Path, force: bool, report: dict[str, Any], normalised, converted, verification,
                  ident: str, progress: Progress) -> None:
    """The output folder, all or nothing: model.onnx, model.tflite, firmware files, report.json/.html."""
    import onnx

    from hub.output import atomic_folder, to_json
    from hub.report import portability_sections
    from hub.report_render import write_html

    with atomic_folder(out_dir, force) as tmp:
        onnx.save(normalised.onnx_model, str(tmp / "model.onnx"))
        (tmp / "model.tflite").write_bytes(converted.tflite_bytes)
        if verification is not None and verification.tflm.get("loads"):
            with progress.stage("export", "Writing firmware files"):
                from hub.export import export_firmware

                arena = verification.memory.get("arena_recommended_bytes")
                report["firmware"] = [p.name for p in export_firmware(converted.tflite_bytes, ident, tmp, arena)]
        report["timings_s"] = {**progress.timings, **{k: round(v, 3) for k, v in converted.timings_s.items()}}
        report.update(portability_sections(normalised.onnx_model, measured=report))
        write_html(report, tmp / "report.html")
        (tmp / "report.json").write_text(to_json(report))


def _firmware_name(name: str) -> str:
    from hub.export import sanitize_identifier

    return sanitize_identifier(name)


def _normalise(source: SourceModel, options: LoadOptions, passes: list[str] | None = None):
    from hub.normalise import normalise_source

    return normalise_source(source, options, passes)


def _tflite_passes(converted):
    """The flatbuffer passes (hub.tflite_passes) on the converter's output."""
    from dataclasses import replace

    from hub.tflite_passes import run_passes

    tflite_bytes, results = run_passes(converted.tflite_bytes)
    return replace(converted, tflite_bytes=tflite_bytes), results


def _analyse(onnx_model, target: str, quantize: str):
    from hub.analyse import analyse_onnx

    return analyse_onnx(onnx_model, target=target, quantize=quantize)


def _verify(tflite_bytes: bytes, reference, held_out, min_cosine, measure_arena: bool = True):
    from hub.verify import verify

    return verify(tflite_bytes, reference, _as_sample_list(held_out), min_cosine=min_cosine,
                  measure_arena=measure_arena)


def _judge_fidelity(path: Path, options, normalised, calibration_set, tflite_bytes: bytes, verification,
                    progress: Progress) -> None:
    """Poor fidelity (hub.fidelity.poor) is the converter's fault when float32 is poor too: an error
    naming the node where outputs diverge. Otherwise it is quantization's: a warning naming the
    likely cause. Costs one float32 conversion, and only when a quantized model is poor."""
    from hub import fidelity as fid

    why = fid.poor(verification.fidelity, options.quantize)
    if why is None:
        return
    float_bytes, float_fidelity = tflite_bytes, verification.fidelity
    if options.quantize != "float32":
        reason = "the float32 model that would tell why did not run on TFLM"
        with progress.stage("diagnose", "Converting to float32 to tell conversion from quantization error"):
            try:
                float_bytes = _convert_float32(normalised, calibration_set, options)
                float_fidelity = _verify(float_bytes, normalised.onnx_model, calibration_set.held_out, None,
                                         measure_arena=False).fidelity
            except HubError as exc:
                float_fidelity, reason = None, f"the float32 conversion that would tell why failed: {exc.message}"
        if float_fidelity is None:
            _add_finding(verification, "warning", f"{options.quantize} fidelity is poor ({why}); {reason}")
            warn(f"{path.name}: {verification.findings[-1].message}")
            return
    float_why = fid.poor(float_fidelity, "float32")
    if float_why is not None:
        _conversion_error(verification, normalised.onnx_model, calibration_set.held_out, float_bytes,
                          float_fidelity, float_why, options.quantize, why)
        return
    causes = fid.quantization_causes(_read(tflite_bytes), verification.fidelity, calibration_set.synthetic,
                                     options.quantize)
    verification.fidelity["diagnosis"] = {"kind": "quantization", "float32_cosine": float_fidelity.get("cosine"),
                                          "causes": causes}
    message = (f"{options.quantize} fidelity is poor ({why}) while float32 matches the source (cosine "
               f"{float_fidelity.get('cosine'):.6f}): a quantization error; likely cause: "
               + ("; ".join(causes) or "none of the known ones (output scale, softmax, wide ranges, calibration)"))
    _add_finding(verification, "warning", message, fid.remedies(calibration_set.synthetic, options.quantize))
    warn(f"{path.name}: {message} ({verification.findings[-1].hint})")


def _conversion_error(verification, reference, held_out, float_bytes: bytes, float_fidelity: dict, float_why: str,
                      quantize: str, why: str) -> None:
    from hub import fidelity as fid
    from hub.verify import synthetic_samples, to_tflite_inputs

    sample = (_as_sample_list(held_out) or synthetic_samples(reference))[0]
    where = fid.locate_divergence(float_bytes, reference, sample, to_tflite_inputs(_read(float_bytes), sample))
    verification.fidelity["diagnosis"] = {"kind": "conversion", "float32_cosine": float_fidelity.get("cosine"),
                                          "diverges_at": where}
    place = (f"outputs first diverge at node {where['node']} ({where['op']})" if where and where.get("node")
             else "the node where outputs first diverge was not found")
    if where and where.get("channels_first_from"):
        place += (f", whose input is computed right but left in channels-first order from node "
                  f"{where['channels_first_from']} on (a layout error in onnx2tf's lowering there)")
    not_quant = "" if quantize == "float32" else f"; the poor {quantize} fidelity ({why}) is not quantization's doing"
    _add_finding(verification, "error", f"the converter changed the model's meaning: the float32 TFLite model's "
                 f"outputs differ from the source's ({float_why}){not_quant}; {place}",
                 "an onnx2tf lowering error: rewrite that layer with other ops, or report it to hub")
    verification.ok = False


def _convert_float32(normalised, calibration_set, options) -> bytes:
    from dataclasses import replace

    from hub.convert import convert

    return convert(normalised, calibration_set, replace(options, quantize="float32")).tflite_bytes


def _add_finding(verification, severity: str, message: str, hint: str = "") -> None:
    from hub.artifacts import Finding

    verification.findings.append(Finding("model", "", [], severity, message, hint=hint))


def _read(tflite_bytes: bytes):
    from hub.tflite_model import read_tflite

    return read_tflite(tflite_bytes)


def _as_sample_list(held_out: dict) -> list[dict]:
    """{name: (N, ...)} -> [{name: (1, ...)}, ...] as verify takes them."""
    if not held_out:
        return []
    count = len(next(iter(held_out.values())))
    return [{k: v[i : i + 1] for k, v in held_out.items()} for i in range(count)]


def _model_section(tflite_bytes: bytes) -> dict[str, Any]:
    from hub.tflite_model import read_tflite

    model = read_tflite(tflite_bytes)
    return {
        "tflite_bytes": model.size_bytes,
        "ops": model.op_histogram(),
        "op_count": len(model.ops),
        "inputs": model.io_specs("inputs"),
        "outputs": model.io_specs("outputs"),
    }


def _blocking_hint(check) -> str:
    if check is None or check.compatible:
        return ""
    first = next((f for f in check.findings if f.severity == "error"), None)
    return f"; hub check predicted it: {first.node} ({first.op}): {first.message}" if first else ""


def _verification_failure(verification) -> str:
    errors = [f for f in verification.findings if f.severity == "error"]
    if errors:
        return f"fails verification: {errors[0].message}"
    return f"fails verification: {verification.tflm.get('message') or 'see report.json'}"


def check(model: str | Path, *, target: str = "tflm", quantize: str = "int8", options: LoadOptions | None = None):
    """Predict what TFLM will refuse, node by node; returns a CheckResult (see hub.analyse)."""
    from hub.analyse import analyse_onnx, analyse_tflite

    path = Path(model)
    resolve(target, quantize, command="check")
    source = load_source(path, options or LoadOptions())
    if source.framework == "tflite":
        return analyse_tflite(source.tflite_bytes, target=target)
    normalised = _normalise(source, options or LoadOptions())
    return analyse_onnx(normalised.onnx_model, target=target, quantize=quantize)


def verify(model: str | Path, *, reference: str | Path | None = None, min_cosine: float | None = None,
           input_range: str | None = None):
    """Run a .tflite on the real TFLM interpreter; compare with an ONNX reference if given."""
    from hub import calibration as calib
    from hub.verify import verify as verify_stage

    path = Path(model)
    source = load_source(path, LoadOptions())
    if source.framework != "tflite":
        raise InputError("hub verify takes a .tflite file (hub convert verifies its own output)", path)
    reference_model, held_out = None, []
    if reference is not None:
        ref_source = load_source(Path(reference), LoadOptions())
        if ref_source.framework != "onnx":
            raise InputError("--reference must be an ONNX model", reference)
        normalised = _normalise(ref_source, LoadOptions())
        reference_model = normalised.onnx_model
        cal = calib.build_calibration(normalised.inputs, None, calib.parse_input_range(input_range))
        held_out = _as_sample_list(cal.held_out)
    return verify_stage(source.tflite_bytes, reference_model, held_out or None, min_cosine=min_cosine)


def export(model: str | Path, *, name: str | None = None, out: str | Path | None = None, force: bool = False) -> dict:
    """Firmware files for a .tflite: C array, op resolver, settings with the measured arena."""
    from hub.export import export_firmware
    from hub.output import atomic_folder
    from hub.verify import verify as verify_stage

    path = Path(model)
    source = load_source(path, LoadOptions())
    if source.framework != "tflite":
        raise InputError("hub export takes a .tflite file; use hub convert for other models", path)
    ident = _firmware_name(name or identifier_from(path))
    out_dir = Path(out) if out else Path.cwd() / f"{ident}_firmware"
    verification = verify_stage(source.tflite_bytes, None, None)
    if not verification.ok:
        raise IncompatibleError(_verification_failure(verification), path)
    with atomic_folder(out_dir, force) as tmp:
        files = export_firmware(source.tflite_bytes, ident, tmp, verification.memory.get("arena_recommended_bytes"))
    return {"output": str(out_dir), "files": [f.name for f in files], **verification.to_dict()}


def report(model: str | Path, *, targets: str | None = None, board: str | None = None,
           ram_kb: float | None = None, flash_kb: float | None = None, options: LoadOptions | None = None) -> dict:
    """Portability report (hub.report): where the model can run, what blocks each target, board fit.
    `hub.report.exit_code(result)` gives the CLI's exit code; hub.report_render renders it."""
    from hub.report import ALL_TARGETS, build_report, parse_targets, resolve_board

    wanted = parse_targets(targets or ALL_TARGETS)
    chosen = resolve_board(board, ram_kb, flash_kb)
    return build_report(Path(model), wanted, chosen, options or LoadOptions())
