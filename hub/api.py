"""The operations behind the CLI, callable from Python: `import hub; hub.convert(...)`.

Each function runs the pipeline stages in order and returns plain data
(dicts ready for JSON); the CLI only parses flags and prints.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hub.artifacts import LoadOptions, SourceModel
from hub.errors import IncompatibleError, InputError
from hub.progress import Progress, warn

VERIFY_TARGETS = {"tflm"}  # targets whose output is proven on the TFLM interpreter


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
) -> dict[str, Any]:
    """Convert a model for `target`, verify it, write the output folder; returns report.json's content.

    Raises IncompatibleError (exit 1) when TFLM cannot run the result or fidelity
    falls below `min_cosine`; the output folder is still written, with the reasons.
    """
    from hub import calibration as calib
    from hub import convert as convert_stage
    from hub.output import check_destination

    progress = progress or Progress(enabled=False)
    options = options or LoadOptions()
    path = Path(model)
    convert_stage.check_request(target, quantize)  # refuse before any work is spent
    value_range = calib.parse_input_range(input_range)
    out_dir = Path(out) if out else Path.cwd() / f"{identifier_from(path)}_{target}"
    check_destination(out_dir, force)
    ident = _firmware_name(name or identifier_from(path))

    with progress.stage("load", f"Loading {path.name}"):
        source = load_source(path, options)
    if source.framework == "tflite":
        raise InputError("this is already a .tflite model: use hub check, hub verify or hub export on it", path)
    with progress.stage("normalise", "Normalising the ONNX graph"):
        normalised = _normalise(source, options)
    check = None
    if target in VERIFY_TARGETS:  # the check's tables are TFLM's; mobile LiteRT has every builtin
        with progress.stage("analyse", "Checking TFLM compatibility"):
            check = _analyse(normalised.onnx_model, target, quantize)
    calibration_set = calib.build_calibration(normalised.inputs, calibration, value_range, source.source_layouts)
    if calibration_set.synthetic and quantize in ("int8", "int16x8"):
        warn(f"{path.name}: calibrating on synthetic data over [{value_range[0]}, {value_range[1]}]; "
             "pass --calibration with real samples for production accuracy")
    with progress.stage("convert", f"Converting to {quantize} TFLite with onnx2tf"):
        try:
            converted = convert_stage.convert(normalised, calibration_set, convert_stage.ConvertOptions(
                target, quantize, per_channel_dense=per_channel_dense))
        except IncompatibleError as exc:
            raise _conversion_failure(exc, check, path) from None

    report: dict[str, Any] = {
        "target": target,
        "quantize": quantize,
        "source": {"path": str(path), "framework": source.framework},
        "model": _model_section(converted.tflite_bytes),
        "calibration": converted.calibration,
        "passes": [vars(p) for p in normalised.passes],
        "check": check.to_dict() if check else None,
    }
    verification = None
    if target in VERIFY_TARGETS:
        with progress.stage("verify", "Verifying on the TFLM interpreter"):
            verification = _verify(converted.tflite_bytes, normalised.onnx_model, calibration_set.held_out, min_cosine)
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

    from hub.output import atomic_folder
    from hub.report import portability_sections, write_html

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
        (tmp / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")


def _firmware_name(name: str) -> str:
    from hub.export import sanitize_identifier

    return sanitize_identifier(name)


def _normalise(source: SourceModel, options: LoadOptions):
    from hub.normalise import normalise_source

    return normalise_source(source, options)


def _analyse(onnx_model, target: str, quantize: str):
    from hub.analyse import analyse_onnx

    return analyse_onnx(onnx_model, target=target, quantize=quantize)


def _verify(tflite_bytes: bytes, reference, held_out, min_cosine):
    from hub.verify import verify

    return verify(tflite_bytes, reference, _as_sample_list(held_out), min_cosine=min_cosine)


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


def _conversion_failure(exc: IncompatibleError, check, path: Path) -> IncompatibleError:
    """When hub check predicted the failure, its finding names the node and the cause; the
    converter's own last line is then often an unrelated internal error (onnx2tf raised a
    UnicodeDecodeError on a TensorFlow op tf2onnx left in the graph), so it is left out."""
    first = None if check is None else next((f for f in check.findings if f.severity == "error"), None)
    if first is None:
        return IncompatibleError(exc.message, path)
    blocking = sum(f.severity == "error" for f in check.findings)
    return IncompatibleError(f"conversion failed, as hub check predicted ({blocking} blocking node"
                             f"{'s' if blocking > 1 else ''}); first: {first.node} ({first.op}): {first.message}",
                             path, first.hint or None)


def _verification_failure(verification) -> str:
    errors = [f for f in verification.findings if f.severity == "error"]
    if errors:
        return f"fails verification: {errors[0].message}"
    return f"fails verification: {verification.tflm.get('message') or 'see report.json'}"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def check(model: str | Path, *, target: str = "tflm", quantize: str = "int8", options: LoadOptions | None = None):
    """Predict what TFLM will refuse, node by node; returns a CheckResult (see hub.analyse)."""
    from hub.analyse import analyse_onnx, analyse_tflite

    path = Path(model)
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


def report(model: str | Path, **kwargs: Any) -> int:
    """Portability report (see hub.report.run_report); returns the exit code."""
    from hub.report import run_report

    return run_report(Path(model), **kwargs)
