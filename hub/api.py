"""The operations behind the CLI, callable from Python: `from hub import api; api.convert(...)`.

Each function runs the pipeline stages in order and returns their typed result (a ConvertReport,
a CheckResult, a Verification; `hub report`'s sections as a dict); the CLI only parses flags and prints.
The stages import their heavy frameworks (torch, tensorflow, onnx2tf, dask, Vela) only when they run,
so importing this module costs about half a second.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

import hub.adapters
from hub.artifacts import (MAX_INPUT_ELEMENTS, ConvertedModel, ConvertReport, InputLayout, LoadOptions, MixedPrecision,
                           ModelSummary, NormalisedModel, ReferenceOutputs, SourceModel, Verification)
from hub.check.onnx import analyse_onnx, with_rewrites
from hub.check.tflite import analyse_tflite
from hub.convert import converter
from hub.convert.calibration import CalibrationSet, build_calibration, parse_input_range
from hub.convert.dataset import Dataset, load_data
from hub.convert.layout import data_layouts, decide_layouts
from hub.errors import IncompatibleError, InputError
from hub.firmware import ethos_u
from hub.firmware.export import export_firmware, identifier_from_file, sanitize_identifier
from hub.graph.evaluate import onnx_runner
from hub.graph.health import check_graph, check_health
from hub.graph.normalise import normalise_source
from hub.graph.rewrite import rewrite as rewrite_graph
from hub.knowledge.boards import BOARDS, custom_board, find_board
from hub.optimize import precision
from hub.options import CALIBRATION_METHODS, SCHEDULES, ConvertRequest, api_signature, converter_fields
from hub.output import atomic_folder, check_destination, to_json
from hub.progress import Progress, bar, warn
from hub.report.portability import (ALL_TARGETS, build_report, ethos_u_row, parse_targets, portability_sections,
                                    resolve_board)
from hub.report.render import write_html
from hub.targets import Quantize, Target, resolve
from hub.tflite import roll
from hub.tflite.compress import Compression, check_lossless, compress
from hub.tflite.islands import float_islands
from hub.tflite.model import read_tflite
from hub.tflite.passes import run_passes
from hub.verify import accuracy as accuracy_stage
from hub.verify.arena_check import judge_arena
from hub.verify.diagnose import judge_fidelity
from hub.verify.export_check import source_reference
from hub.verify.tflm import reference_layouts, tflm_raw_outputs
from hub.verify.tflm import verify as verify_stage


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
        if _elements(shape) > MAX_INPUT_ELEMENTS:
            raise InputError(f"--input-shape {value!r} is absurdly large ({_elements(shape):,} elements)")
        shapes[name or None] = shape
    return shapes


def _elements(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def load_source(model: str | Path, options: LoadOptions) -> SourceModel:
    return hub.adapters.load(model, options)


def convert(model: str | Path, *, progress: Progress | None = None, **keywords) -> ConvertReport:
    """Convert a model for `target`, verify it, write the output folder; returns what it found
    (`.to_dict()` is report.json).

    Keywords: hub convert's options by name (hub.options.CONVERT_OPTIONS: target="tflm", quantize="int8",
    calibration, input_range, out, name, force, min_cosine, per_channel_dense, per_tensor_weights, rewrite=True,
    npu, schedule="min-arena", compress), `options` (a LoadOptions: input shapes, factory, trust) and `passes`
    (the normalisation passes to run, default all: tests use it to reach onnx2tf's own lowering); see
    hub.options.ConvertRequest. Every refusal comes before any work (hub.options.validate).

    Raises IncompatibleError (exit 1) when TFLM cannot run the result, when the converter changed the
    model's meaning (see hub.verify.diagnose), or when fidelity falls below `min_cosine` (the output folder
    is then still written, with the reasons; a conversion that fails writes none).
    """
    request = ConvertRequest(model=Path(model), **keywords)  # an unknown keyword is a TypeError, as for any function
    checked = validate(request)
    progress = progress or Progress(enabled=False)
    path, tflm = request.model, checked.target.verified_on_tflm  # ethos-u too: its CPU part is TFLM
    options = request.options or LoadOptions()
    convert_options = converter.ConvertOptions(request.target, checked.quantize.converted_as,
                                               **converter_fields(request))

    with progress.stage("load", f"Loading {path.name}"):
        source = _convertible(load_source(path, options))
    with progress.stage("normalise", "Normalising the ONNX graph"):
        reference = check_graph(normalise_source(source, options, request.passes), "normalise")
    layouts = decide_layouts(reference.onnx_model, source.source_layouts)  # before a rewrite: LSTMs name axes
    samples = _calibration(request, checked, reference, source, layouts)
    data = _data(request.data, reference, source, checked.value_range, layouts)  # read now: a bad file costs no conversion
    with progress.stage("reference", "Checking the ONNX export against the source"):  # the reference is the source
        expected = source_reference(source, reference.onnx_model, samples.held_out_samples())
    graph, check = reference, None  # the fidelity reference stays the graph before any rewrite
    if tflm and request.rewrite:
        with progress.stage("rewrite", "Rewriting what TFLM has no kernel for"):
            graph = check_health(reference, rewrite_graph(reference, samples.samples, checked.quantize), "rewrite")
    if tflm:  # the check's tables are TFLM's; mobile LiteRT has every builtin
        with progress.stage("analyse", "Checking TFLM compatibility"):
            check = with_rewrites(analyse_onnx(graph.onnx_model, "tflm", checked.quantize.converted_as), graph.passes)
    with progress.stage("convert", f"Converting to {checked.quantize.converted_as} TFLite with onnx2tf"):
        converted = _onnx2tf(graph, samples, convert_options, check, path, layouts, float32_twin=tflm)
    mixed = None
    if checked.quantize is Quantize.AUTO:
        with progress.stage("precision", "Promoting the layers int8 loses most to int16, measured on TFLM"):
            converted, mixed = precision.auto(graph, samples, converted, convert_options, expected, _goal(request),
                                              _accuracy_goal(data, reference, source, progress, layouts))
    # not with --compress: hub.tflite.compress rewrites the main subgraph's weight buffers, which a WHILE body shares
    roll_loops = request.target == "tflm" and not request.compress
    converted, tflite_passes = _flatbuffer_passes(converted, roll_loops)
    graph = replace(graph, passes=roll.rolled_paths(graph.passes, tflite_passes))  # a rolled GRU's path: "rolled"
    compression = verification = None
    if request.compress:
        with progress.stage("compress", "Compressing clustered weights into TFLM look-up tables"):
            converted, compression = _compress(converted, reference.onnx_model, samples.held_out_samples(),
                                               request.schedule, expected)
    if tflm:
        with progress.stage("schedule", "Ordering operators for the least arena"):
            # Vela re-plans an ethos-u model itself (and renumbers tensors an offline plan would name)
            converted, scheduled = _schedule(converted, request.schedule if request.target == "tflm" else "default")
            tflite_passes.append(scheduled.pass_result())
        with progress.stage("verify", "Verifying on the TFLM interpreter"):
            verification = scheduled.joined(verify_stage(converted.tflite_bytes, reference.onnx_model,
                                                         samples.held_out_samples(), min_cosine=request.min_cosine,
                                                         expected=expected, layouts=layouts))
            verification = judge_arena(verification, graph.onnx_model, checked.quantize.widest.value)
            compression = compression and compression.measured(after=verification)
        with progress.stage("diagnose", "Judging fidelity"):  # the per-layer profile, only when fidelity is poor
            verification, messages = judge_fidelity(_delivered(convert_options, mixed), graph, samples,
                                                    converted.tflite_bytes, verification, expected, layouts,
                                                    converted.float32_bytes)
            for message in messages:
                warn(f"{path.name}: {message}")
        if data is not None:
            verification = _accuracy(verification, data, request.max_accuracy_drop, converted.tflite_bytes,
                                     source.run or onnx_runner(reference.onnx_model),
                                     source.framework if source.run else "onnxruntime", reference, progress, layouts)
    report = ConvertReport(target=request.target, quantize=checked.quantize,
                           source={"path": str(path), "framework": source.framework,
                                   **({"exporter": source.exporter} if source.exporter else {})},
                           model=_model_summary(converted.tflite_bytes, layouts), calibration=converted.calibration,
                           passes=graph.passes + tflite_passes, check=check, verification=verification,
                           output=checked.out, compression=compression,
                           float_islands=float_islands(read_tflite(converted.tflite_bytes)), mixed_precision=mixed)
    if checked.npu is not None and verification.ok:  # Vela compiles only an int8 model TFLM has proven
        with progress.stage("vela", f"Compiling for {checked.npu} with Vela"):
            report.ethos_u = ethos_u.compile_model(converted.tflite_bytes, checked.npu)
    _write_output(report, graph, converted, checked.ident, request.force, progress)
    if verification is not None and not verification.ok:
        raise IncompatibleError(_verification_failure(verification), path)
    return report


@dataclass(frozen=True)
class Checked:
    """A request `validate` accepted, with what it resolved."""

    target: Target
    quantize: Quantize
    npu: str | None  # --target ethos-u: the Vela config (default ethos-u55-128); None otherwise
    value_range: tuple[float, float]  # --input-range
    out: Path  # the output folder
    ident: str  # the firmware files' C identifier


def validate(request: Any) -> Checked:
    """Every refusal of a convert request, before any work is spent (InputError, exit 2), in this order."""
    path, target = Path(request.model), request.target
    target_row, quantize = resolve(target, request.quantize)
    npu = npu_option(target, request.npu)
    if request.compress and target != "tflm":
        raise InputError(f"--compress is for --target tflm (TFLM's DECODE op), not --target {target}")
    if request.schedule not in SCHEDULES:
        raise InputError(f"--schedule {request.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if request.calibration_method not in CALIBRATION_METHODS or (request.calibration_method != "minmax"
                                                                 and quantize.value != "int8"):
        raise InputError(f"--calibration-method {request.calibration_method!r}: one of {', '.join(CALIBRATION_METHODS)}"
                         ", and other than minmax only with --quantize int8")
    value_range = parse_input_range(request.input_range)
    out = Path(request.out) if request.out else Path.cwd() / f"{identifier_from_file(path)}_{target}"
    check_destination(out, request.force)
    ident = sanitize_identifier(request.name) if request.name else identifier_from_file(path)
    if request.per_channel_dense and request.per_tensor_weights:
        raise InputError("--per-channel-dense and --per-tensor-weights contradict each other: give one")
    _check_data_options(request.data, request.max_accuracy_drop, target_row.verified_on_tflm)
    return Checked(target_row, quantize, npu, value_range, out, ident)


def _check_data_options(data: Path | None, max_drop: float | None, on_tflm: bool = True) -> None:
    if max_drop is not None and data is None:
        raise InputError("--max-accuracy-drop judges the accuracy on --data: give --data")
    if max_drop is not None and max_drop < 0:
        raise InputError(f"--max-accuracy-drop is a number of percentage points >= 0, got {max_drop:g}")
    if data is not None and not on_tflm:
        raise InputError("--data measures accuracy on the TFLM interpreter: use --target tflm or ethos-u")


def _data(path: Path | None, graph: NormalisedModel, source: SourceModel, value_range: tuple[float, float],
          layouts: list[InputLayout]) -> Dataset | None:
    """--data's samples (and labels) in the graph's layout, for the one input accuracy is measured on."""
    if path is None:
        return None
    if len(graph.inputs) != 1:
        raise InputError(f"--data measures models with one input; this one has {len(graph.inputs)}", path)
    spec = graph.inputs[0]
    return load_data(path, spec, data_layouts(source.source_layouts, layouts).get(spec.name), value_range)


def _accuracy(verification: Verification, data: Dataset, max_drop: float | None, tflite_bytes: bytes,
              run: accuracy_stage.Runner | None, reference: str | None, graph: NormalisedModel | None,
              progress: Progress, layouts: list[InputLayout] | None = None) -> Verification:
    """Accuracy on --data (hub.verify.accuracy), joined to the verification; past --max-accuracy-drop it fails."""
    if not verification.tflm.invokes:
        return verification
    spec = graph.inputs[0] if graph is not None else accuracy_stage.tflite_input_spec(tflite_bytes)[0]
    outputs = [o.name for o in graph.outputs] if graph is not None else None
    source = None
    if run is not None:  # a bar, not a stage: one live display
        with bar(f"Running the source ({reference}) on --data", len(data.x), progress.enabled) as step:
            source = accuracy_stage.source_outputs(run, spec, data.x, step, outputs)
    with progress.stage("accuracy", f"Running {len(data.x)} samples of --data on the TFLM interpreter"):
        on_tflm = accuracy_stage.tflm_outputs(tflite_bytes, spec, data.x, graph.outputs if graph else None, layouts)
    measured, finding = accuracy_stage.judge(accuracy_stage.measure(data, on_tflm, source, reference), max_drop)
    return replace(verification, accuracy=measured, findings=verification.findings + ([finding] if finding else []),
                   ok=verification.ok and measured.ok)


def npu_option(target: str, npu: str | None) -> str | None:
    """--npu belongs to --target ethos-u (default ethos-u55-128); refused with any other target."""
    if target != "ethos-u":
        if npu is not None:
            raise InputError(f"--npu is for --target ethos-u, not --target {target}")
        return None
    return ethos_u.check_npu(npu or ethos_u.DEFAULT_NPU)


def _convertible(source: SourceModel) -> SourceModel:
    if source.framework == "tflite":
        raise InputError("this is already a .tflite model: use hub check, hub verify or hub export on it", source.path)
    return source


def _delivered(options: converter.ConvertOptions, mixed: MixedPrecision | None) -> converter.ConvertOptions:
    """The options that made the model verified: auto's mix is no int8 model (its int16 ops carry other tensor
    names), so the poor-fidelity diagnosis names it auto and does not map an int8 profile onto it."""
    return options if mixed is None or mixed.chosen.label == "int8" else replace(options, quantize="auto")


def _goal(request: ConvertRequest) -> precision.Goal:
    """--quantize auto's target: --max-accuracy-drop on --data, else --min-cosine (default 0.99)."""
    if request.max_accuracy_drop is not None:
        return precision.Goal("accuracy_drop", request.max_accuracy_drop)
    return precision.Goal("cosine", request.min_cosine if request.min_cosine is not None
                          else precision.DEFAULT_MIN_COSINE)


def _accuracy_goal(data: Dataset | None, graph: NormalisedModel, source: SourceModel, progress: Progress,
                   layouts: list[InputLayout]) -> precision.AccuracyGoal | None:
    """--data's samples with the source's outputs on them, computed once for every mix auto measures."""
    if data is None:
        return None
    run, name = (source.run, source.framework) if source.run else (onnx_runner(graph.onnx_model), "onnxruntime")
    spec, outputs = graph.inputs[0], list(graph.outputs)
    with bar(f"Running the source ({name}) on --data", len(data.x), progress.enabled) as step:
        outputs_source = accuracy_stage.source_outputs(run, spec, data.x, step, [o.name for o in outputs])
    return precision.AccuracyGoal(data, spec, outputs, outputs_source, name, layouts)


def _calibration(request: ConvertRequest, checked: Checked, normalised: NormalisedModel, source: SourceModel,
                 layouts: list[InputLayout]) -> CalibrationSet:
    """--calibration's samples (else synthetic ones over --input-range), and the held-out ones verify runs."""
    value_range = checked.value_range
    samples = build_calibration(normalised.inputs, request.calibration, value_range,
                                data_layouts(source.source_layouts, layouts))
    if samples.synthetic and checked.quantize.quantized:
        warn(f"{request.model.name}: calibrating on synthetic data over [{value_range[0]}, {value_range[1]}]; "
             "pass --calibration with real samples for production accuracy")
    return samples


def _onnx2tf(graph: NormalisedModel, samples: CalibrationSet, options: converter.ConvertOptions, check,
             path: Path, layouts: list[InputLayout], float32_twin: bool) -> ConvertedModel:
    """`float32_twin`: the float32 model a poor-fidelity diagnosis measures, made in the same child (only where
    that diagnosis runs: on TFLM)."""
    try:
        return converter.convert(graph, samples, options, layouts, float32_twin=float32_twin)
    except IncompatibleError as exc:
        raise _conversion_failure(exc, check, path) from None


def _write_output(report: ConvertReport, graph: NormalisedModel, converted: ConvertedModel, ident: str, force: bool,
                  progress: Progress) -> None:
    """The output folder, all or nothing: model.onnx, model.tflite, firmware files, report.json/.html."""
    verification = report.verification
    with atomic_folder(report.output, force) as tmp:
        onnx.save(graph.onnx_model, str(tmp / "model.onnx"))
        (tmp / "model.tflite").write_bytes(converted.tflite_bytes)
        report.portability = portability_sections(graph.onnx_model, measured=report.measured)
        if report.ethos_u is not None:  # the firmware is the Vela-compiled model's
            report.firmware = ethos_u.write_outputs(report.ethos_u, ident, tmp, converted.input_layouts)
            report.portability.setdefault("targets", []).append(ethos_u_row(report.ethos_u))
        elif verification is not None and verification.tflm.loads:
            with progress.stage("export", "Writing firmware files"):
                arena = verification.memory.arena_recommended_bytes
                report.firmware = [p.name for p in export_firmware(converted.tflite_bytes, ident, tmp, arena,
                                                                   constants=_decode_constants(report.compression),
                                                                   layouts=converted.input_layouts)]
        report.timings_s = {**progress.timings, **{k: round(v, 3) for k, v in converted.timings_s.items()}}
        document = report.to_dict()
        write_html(document, tmp / "report.html")
        (tmp / "report.json").write_text(to_json(document))


def _compress(converted: ConvertedModel, reference: onnx.ModelProto, held_out: list[dict],
              schedule_mode: str, expected: ReferenceOutputs | None) -> tuple[ConvertedModel, Compression]:
    """The converted model with its clustered filters compressed (hub.tflite.compress); the uncompressed model is
    measured on TFLM first (same operator ordering) for the before/after figures."""
    plain = converted.tflite_bytes
    compressed, compression = compress(plain)
    samples = held_out or None
    if samples:
        layouts = converted.input_layouts
        check_lossless(tflm_raw_outputs(plain, samples, layouts), tflm_raw_outputs(compressed, samples, layouts))
    scheduled_plain, _ = _schedule(converted, schedule_mode)
    compression = compression.measured(before=verify_stage(scheduled_plain.tflite_bytes, reference, held_out,
                                                           expected=expected, layouts=converted.input_layouts))
    return replace(converted, tflite_bytes=compressed), compression


def _decode_constants(compression: Compression | None) -> dict[str, tuple[int, str]] | None:
    """The settings header's note on DECODE's arena (already inside kTensorArenaSize)."""
    if compression is None or compression.decode_arena_bytes is None:
        return None
    note = "of kTensorArenaSize: the weights DECODE rebuilds (register AddDecode(), see _model_ops.h)"
    return {"kDecodeArenaBytes": (compression.decode_arena_bytes, note)}


def _firmware_name(name: str | None, path: Path) -> str:
    """The C identifier of the firmware files: --name (refused when C cannot take it), else the file's name."""
    return sanitize_identifier(name) if name else identifier_from_file(path)


def _flatbuffer_passes(converted: ConvertedModel, roll_loops: bool) -> tuple[ConvertedModel, list]:
    """The flatbuffer passes (hub.tflite.passes) on the converter's output, then, for TFLM, an unrolled GRU's
    steps rolled into a WHILE loop (Vela compiles the unrolled steps onto an Ethos-U NPU but refuses the loop)."""
    tflite_bytes, results = run_passes(converted.tflite_bytes)
    if roll_loops:
        tflite_bytes, rolled = roll.as_pass(tflite_bytes)
        results.append(rolled)
    return replace(converted, tflite_bytes=tflite_bytes), results


def _schedule(converted: ConvertedModel, mode: str):
    """The least-arena operator order and plan (hub.tflite.schedule), measured on TFLM; mode "default" only bounds it."""
    from hub.tflite import schedule  # why here: networkx, 0.11 s of start-up that hub check and verify do not need

    measure = (lambda data: verify_stage(data, None, None).memory) if mode == "min-arena" else None
    tflite_bytes, result = schedule.run(converted.tflite_bytes, measure)
    return replace(converted, tflite_bytes=tflite_bytes), result


def _model_summary(tflite_bytes: bytes, layouts: list[InputLayout] | None = None) -> ModelSummary:
    model = read_tflite(tflite_bytes)
    return ModelSummary(model.size_bytes, model.op_histogram(), model.io_specs("inputs"), model.io_specs("outputs"),
                        layouts or [])


def _conversion_failure(exc: IncompatibleError, check, path: Path) -> IncompatibleError:
    """When the converter stopped at a node (or op) hub check had blocked, the check's finding names the cause:
    the converter's own line is then often an unrelated internal error (onnx2tf raised a
    UnicodeDecodeError on a TensorFlow op tf2onnx left in the graph). Any other failure (a timeout,
    memory, another node) keeps the converter's message, with the check's first finding after it."""
    errors = [] if check is None else [f for f in check.findings if f.severity == "error"]
    at_blocked = next((f for f in errors if f" at ONNX node {f.node}:" in exc.message
                       or f"'onnx2tf.ops.{f.op}'" in exc.message), None)  # no converter module for that op
    if at_blocked is not None:
        return IncompatibleError(f"conversion failed at {at_blocked.node} ({at_blocked.op}), as hub check predicted: "
                                 f"{at_blocked.message}", path, at_blocked.hint or exc.hint,
                                 child_traceback=exc.child_traceback)
    predicted = f"; hub check predicted: {errors[0].node} ({errors[0].op}): {errors[0].message}" if errors else ""
    return IncompatibleError(exc.message + predicted, path, exc.hint, child_traceback=exc.child_traceback)


def _verification_failure(verification) -> str:
    errors = [f for f in verification.findings if f.severity == "error"]
    if errors:
        return f"fails verification: {errors[0].message}" + (f" ({errors[0].hint})" if errors[0].hint else "")
    return f"fails verification: {verification.tflm.message or 'see report.json'}"


def check(model: str | Path, *, target: str = "tflm", quantize: str = "int8", options: LoadOptions | None = None,
          rewrite: bool = True, npu: str | None = None):
    """Predict what TFLM will refuse, node by node; returns a CheckResult (see hub.check.onnx, hub.check.tflite).

    With `rewrite` (the default, as in convert), what a rewrite rule replaces is reported as
    `rewrite`, not as a blocker, and the verdict is the rewritten graph's: the stages convert runs before onnx2tf
    (normalise, rewrite), then analyse_onnx folds what onnx2tf computes while converting (hub.check.onnx.as_converted)
    and judges what is left. `--target ethos-u` adds
    per node whether Vela maps it to the NPU `npu` (hub.firmware.ethos_u.check)."""
    path = Path(model)
    quantize = resolve(target, quantize, command="check")[1].converted_as  # auto is checked as its int8 base
    npu = npu_option(target, npu)
    source = load_source(path, options or LoadOptions())
    if source.framework == "tflite":
        result = analyse_tflite(source.tflite_bytes, target="tflm")
    else:
        graph = check_graph(normalise_source(source, options or LoadOptions()), "normalise")
        if rewrite:
            graph = check_health(graph, rewrite_graph(graph), "rewrite")
        result = with_rewrites(analyse_onnx(graph.onnx_model, "tflm", quantize), graph.passes)
    return result if npu is None else ethos_u.check(result, npu, source.tflite_bytes)


def verify(model: str | Path, *, reference: str | Path | None = None, min_cosine: float | None = None,
           input_range: str | None = None, data: str | Path | None = None, max_accuracy_drop: float | None = None,
           progress: Progress | None = None):
    """Run a .tflite on the real TFLM interpreter; compare with an ONNX reference if given; with `data`, accuracy
    on it (hub.verify.accuracy: TFLM's, and the reference's when given), failing past `max_accuracy_drop`."""
    path = Path(model)
    source = load_source(path, LoadOptions())
    if source.framework != "tflite":
        raise InputError("hub verify takes a .tflite file (hub convert verifies its own output)", path)
    _check_data_options(Path(data) if data is not None else None, max_accuracy_drop)
    if max_accuracy_drop is not None and reference is None:
        raise InputError("--max-accuracy-drop compares TFLM with the source model: give --reference")
    reference_model, held_out, normalised, ref_source = None, [], None, None
    if reference is not None:
        ref_source = load_source(Path(reference), LoadOptions())
        if ref_source.framework != "onnx":
            raise InputError("--reference must be an ONNX model", reference)
        normalised = normalise_source(ref_source, LoadOptions())
        reference_model = normalised.onnx_model
        cal = build_calibration(normalised.inputs, None, parse_input_range(input_range))
        held_out = cal.held_out_samples()
    layouts = reference_layouts(read_tflite(source.tflite_bytes), reference_model) if reference_model else []
    dataset = None
    if data is not None:
        dataset = (_data(Path(data), normalised, ref_source, parse_input_range(input_range), layouts)
                   if normalised is not None
                   else load_data(data, *accuracy_stage.tflite_input_spec(source.tflite_bytes),
                                  parse_input_range(input_range)))
    verification = verify_stage(source.tflite_bytes, reference_model, held_out or None, min_cosine=min_cosine,
                                layouts=layouts)
    if dataset is None:
        return verification
    run = None if normalised is None else (ref_source.run or onnx_runner(reference_model))
    name = None if normalised is None else (ref_source.framework if ref_source.run else "onnxruntime")
    return _accuracy(verification, dataset, max_accuracy_drop, source.tflite_bytes, run, name, normalised,
                     progress or Progress(enabled=False), layouts)


def export(model: str | Path, *, name: str | None = None, out: str | Path | None = None, force: bool = False) -> dict:
    """Firmware files for a .tflite: C array, op resolver, settings with the measured arena."""
    path = Path(model)
    source = load_source(path, LoadOptions())
    if source.framework != "tflite":
        raise InputError("hub export takes a .tflite file; use hub convert for other models", path)
    ident = _firmware_name(name, path)
    out_dir = Path(out) if out else Path.cwd() / f"{ident}_firmware"
    verification = verify_stage(source.tflite_bytes, None, None)
    if not verification.ok:
        raise IncompatibleError(_verification_failure(verification), path)
    with atomic_folder(out_dir, force) as tmp:
        files = export_firmware(source.tflite_bytes, ident, tmp, verification.memory.arena_recommended_bytes)
    return {"output": str(out_dir), "files": [f.name for f in files], **verification.to_dict()}


def report(model: str | Path, *, targets: str | None = None, board: str | None = None,
           ram_kb: float | None = None, flash_kb: float | None = None, options: LoadOptions | None = None) -> dict:
    """Portability report (hub.report.portability): where the model can run, what blocks each target, board fit.
    `hub.report.portability.exit_code(result)` gives the CLI's exit code; hub.report.render renders it."""
    wanted = parse_targets(targets or ALL_TARGETS)
    chosen = resolve_board(board, ram_kb, flash_kb)
    return build_report(Path(model), wanted, chosen, options or LoadOptions())


def sweep(models: list[str | Path], *, quantize: str | list[str] = "int8", boards: str | list[str] | None = None,
          workers: int | None = None, scheduler: str | None = None, out: str | Path = "sweep", resume: bool = False,
          timeout_s: float | None = None, progress: bool = False) -> dict:
    """Convert every model in every quantize mode for TFLM, one `hub convert` process per job, on a Dask
    LocalCluster of `workers` processes (default: from cores and memory) or the cluster at `scheduler`;
    judge each job against `boards` (default all built-in ones). Writes sweep.json/.csv/.html in `out`
    and returns the sweep.json document (see hub.sweep.run)."""
    # why here: the sweep stage, its renderer (rich.progress) and the optimize modules below cost 0.1 s of
    # start-up that hub check, convert and verify, which call this module, do not need
    from hub.report.sweep import SweepBar, write_outputs
    from hub.sweep import run as sweep_stage

    modes = [m.strip() for m in (quantize.split(",") if isinstance(quantize, str) else quantize) if m.strip()]
    names = boards.split(",") if isinstance(boards, str) else boards
    chosen = list(BOARDS) if names is None else [find_board(n.strip()) for n in names if n.strip()]
    if workers is not None and (workers < 1 or scheduler):
        raise InputError("--workers takes a number >= 1, for the local cluster only (not with --scheduler)")
    if not modes:
        raise InputError("--quantize needs at least one mode: int8, int16x8 or float32")
    jobs = sweep_stage.plan([Path(m) for m in models], modes, Path(out), timeout_s)
    with SweepBar(len(jobs), progress) as bar:
        doc = sweep_stage.sweep(jobs, boards=chosen, workers=workers, scheduler=scheduler, resume=resume, out=Path(out),
                                on_update=bar.update)
    write_outputs(doc, Path(out))
    return doc


def optimize(
    model: str | Path,
    *,
    data: str | Path,
    val: str | Path | None = None,
    prune_ratio: float | None = None,
    distill: bool = True,
    epochs: int = 10,
    lr: float = 1e-3,
    temperature: float = 4.0,
    alpha: float = 0.9,
    round_to: int | None = None,
    cluster: int | None = None,
    cluster_scope: str = "layer",
    qat: bool = False,
    board: str | None = None,
    ram_kb: float | None = None,
    flash_kb: float | None = None,
    levels: str | list[float] | None = None,
    seed: int = 0,
    target: str = "tflm",
    input_range: str | None = None,
    out: str | Path | None = None,
    name: str | None = None,
    force: bool = False,
    options: LoadOptions | None = None,
    progress: Progress | None = None,
) -> tuple[ConvertReport, dict]:
    """Prune `prune_ratio` of the channels (structured: a smaller dense network), distill the student from
    the source model on `data` (.npz with x and optionally y, or a folder of class subfolders), convert
    teacher and student to int8, and measure both on the TFLM interpreter (hub.optimize.run).

    Returns (the student's ConvertReport, report.json's `optimize` section). Without labels training is
    pure distillation and accuracy is agreement with the teacher; `val` (else a seeded fifth of `data`)
    is held out for every figure. `distill=False` trains on the labels alone (the comparison run).
    `cluster=N` then k-means every filter to N values, fine-tunes them (hub.optimize.cluster) and converts with
    `compress=True`: TFLM look-up tables, flash before/after, arena and invoke time measured. `qat` fine-tunes
    with TFLite's int8 scheme simulated (hub.optimize.qat) before conversion.
    `board` (a key of hub.knowledge.boards, or `ram_kb`/`flash_kb`) searches instead: pruning `levels` (default 0, 0.25,
    0.5, 0.75) x int16x8 / int8 / int8+QAT / int8+cluster 16 / int8+cluster 4, every candidate measured on
    TFLM, and writes the most accurate one that fits (hub.optimize.board_search); `prune_ratio`, `cluster` and `qat`
    are then the search's to choose. `prune_ratio` defaults to 0.5."""
    from hub.optimize import run as optimize_stage  # why here: as hub.sweep above, a cost other commands skip
    from hub.optimize.cluster import check as check_clusters
    from hub.optimize.training import DistillOptions

    if target != "tflm":
        raise InputError(f"hub optimize measures on the TFLM interpreter: --target must be tflm, not {target!r}")
    if epochs < 0 or lr <= 0 or temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise InputError("--epochs must be >= 0, --lr and --temperature > 0, --alpha in [0, 1]")
    searching = board is not None or ram_kb is not None or flash_kb is not None
    if searching and (prune_ratio is not None or cluster is not None or qat):
        raise InputError("--board (or --ram/--flash) searches pruning, clustering and QAT itself: drop --prune, "
                         "--cluster and --qat")
    if levels is not None and not searching:
        raise InputError("--prune-levels is for the board search: give --board or --ram/--flash")
    if qat and cluster:
        raise InputError("--qat and --cluster cannot be combined yet: QAT's rounding would move the clustered "
                         "weights off their shared values")
    check_clusters(cluster or 16, cluster_scope)
    if round_to is not None and round_to < 1:
        raise InputError(f"--round-to must be a positive channel count, got {round_to}")
    request = optimize_stage.OptimizeRequest(
        model=Path(model), data=Path(data), val=Path(val) if val else None,
        prune_ratio=0.5 if prune_ratio is None else prune_ratio,
        distill=distill, round_to=round_to, cluster=cluster, cluster_scope=cluster_scope, qat=qat,
        board=_search_board(board, ram_kb, flash_kb),
        levels=_levels(levels),
        training=DistillOptions(epochs=epochs, lr=lr, temperature=temperature, alpha=alpha, seed=seed),
        input_range=parse_input_range(input_range), force=force, options=options or LoadOptions())
    path, progress = request.model, progress or Progress(enabled=False)
    ident = _firmware_name(name, path)
    out_dir = Path(out) if out else Path.cwd() / f"{identifier_from_file(path)}_optimized_tflm"
    check_destination(out_dir, force)
    with progress.stage("load", f"Loading {path.name}"):
        source = load_source(path, request.options)
        if source.framework == "tflite":
            raise InputError("a .tflite model cannot be trained: give the source model (PyTorch, Keras or ONNX)", path)
        normalised = normalise_source(source, request.options)
    return optimize_stage.run(request, progress, source, normalised, ident, out_dir, convert)


def _search_board(name: str | None, ram_kb: float | None, flash_kb: float | None):
    if name is not None and (ram_kb is not None or flash_kb is not None):
        raise InputError("give --board or --ram/--flash, not both")
    if name is not None:
        return find_board(name)
    return custom_board(ram_kb, flash_kb) if ram_kb is not None or flash_kb is not None else None


def _levels(levels: str | list[float] | None) -> tuple[float, ...]:
    from hub.optimize.board_search import PRUNE_LEVELS  # why here: see optimize

    if levels is None:
        return PRUNE_LEVELS
    try:
        values = tuple(sorted({float(v) for v in (levels.split(",") if isinstance(levels, str) else levels)}))
    except ValueError:
        raise InputError(f"--prune-levels takes fractions separated by commas, e.g. 0,0.25,0.5; got {levels!r}") \
            from None
    if not values or not all(0.0 <= v < 1.0 for v in values):
        raise InputError(f"--prune-levels must be fractions in [0, 1), got {levels!r}")
    return values


def prune(module, example_input, ratio: float, *, round_to: int | None = None):
    """Structured pruning for your own training loop: removes `ratio` of the channels of every prunable
    layer of the nn.Module (torch-pruning DepGraph, L2 magnitude); the output layer keeps its width."""
    from hub.optimize.training import prune as prune_module  # why here: see optimize

    return prune_module(module, example_input, ratio, round_to=round_to)


def distill(teacher, student, data, labels=None, *, epochs: int = 10, lr: float = 1e-3, temperature: float = 4.0,
            alpha: float = 0.9, seed: int = 0):
    """Hinton distillation of `student` from `teacher` on samples `data` (numpy, the model's layout);
    pure distillation without `labels`. Returns the trained student."""
    from hub.optimize.training import DistillOptions
    from hub.optimize.training import distill as distill_module  # why here: see optimize

    options = DistillOptions(epochs=epochs, lr=lr, temperature=temperature, alpha=alpha, seed=seed)
    return distill_module(teacher, student, data, labels, options)


# api.convert's keywords as help() and editors show them: ConvertRequest's fields (hub.options' table).
convert.__signature__ = api_signature()  # type: ignore[attr-defined]
