"""Optimize stage (`hub optimize`): structured pruning and knowledge distillation, measured on TFLM.

- One trainable representation for every source: a PyTorch nn.Module. A factory (with its state_dict)
  or a trusted pickle is used as it is; TorchScript, torch.export, Keras and ONNX sources come in
  through their normalised ONNX graph and onnx2torch (BatchNorm is then already folded into the
  convolutions). TorchScript and torch.export parameters are trainable, but their layers are not
  nn.Conv2d/nn.Linear modules, which DepGraph needs to cut. A converted module must reproduce the
  ONNX graph (max error <= 1e-4 of the output's range) or it is refused.
- Then hub.optimize.training prunes and distills (hub.optimize.cluster clusters, hub.optimize.qat trains quantization-aware) and
  hub.api.convert converts teacher and student; every memory and accuracy figure is measured on TFLM.
  With a board, hub.optimize.board_search measures candidates instead.
"""
from __future__ import annotations

import copy
import math
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx

from hub.adapters.pytorch import trainable_module
from hub.artifacts import LoadOptions, NormalisedModel, TensorSpec
from hub.convert.dataset import Dataset, load_data
from hub.convert.layout import channels_last
from hub.errors import IncompatibleError, InputError, first_line
from hub.graph.edit import attr, set_attr, static_shape
from hub.optimize import board_search
from hub.optimize.board_search import PRUNE_LEVELS
from hub.optimize.cluster import cluster, project
from hub.optimize.training import DistillOptions, count, distill, export_onnx, predict, prune, scores
from hub.output import atomic_folder, to_json, write_text_atomic
from hub.progress import bar
from hub.report.render import write_html
from hub.tflite.compress import weight_bytes
from hub.tflite.model import read_tflite
from hub.verify.tflm import tflm_outputs

ONNX_MATCH_TOLERANCE = 1e-4  # of the output's range: a converted module that misses this is refused


@dataclass
class Trainable:
    """The teacher as a trainable module, and how to read its output."""

    module: Any  # torch.nn.Module
    spec: TensorSpec  # the one input, ONNX layout
    route: str  # "nn.Module" or "ONNX -> onnx2torch"
    probabilities: bool  # the output is a softmax: its log is the logits
    reconstruction: bool  # the output has the input's size (autoencoder): MSE, cosine agreement


# --- the trainable teacher -------------------------------------------------------------------

def trainable(path: Path, options: LoadOptions, normalised: NormalisedModel) -> Trainable:
    """The source model as an nn.Module (see the module docstring for the two routes)."""
    if len(normalised.inputs) != 1 or len(normalised.outputs) != 1:
        raise IncompatibleError(f"hub optimize trains models with one input and one output; this one has "
                                f"{len(normalised.inputs)} and {len(normalised.outputs)}", path)
    spec = normalised.inputs[0]
    if not np.issubdtype(np.dtype(spec.dtype), np.floating):
        raise IncompatibleError(f"the input {spec.name!r} is {spec.dtype}: hub optimize trains float inputs only", path)
    is_torch_module = any(p.key == "source_framework" and p.value == "pytorch"
                          for p in normalised.onnx_model.metadata_props)
    module = trainable_module(path, options) if is_torch_module else None
    route = "nn.Module"
    if module is None:
        module, route = onnx_to_torch(normalised.onnx_model, path), "ONNX -> onnx2torch"
    module.eval()
    graph = normalised.onnx_model.graph
    last = next((n for n in graph.node if graph.output[0].name in n.output), None)
    out_elements = math.prod(normalised.outputs[0].shape[1:])
    return Trainable(module, spec, route, probabilities=last is not None and last.op_type == "Softmax",
                     reconstruction=out_elements == math.prod(spec.shape[1:]) and out_elements > 1)


def onnx_to_torch(model: onnx.ModelProto, path: Path) -> Any:
    """onnx2torch's nn.Module for a normalised graph, checked against onnxruntime."""
    import torch

    graph = _explicit_pads(_batch_free_reshapes(copy.deepcopy(model)))
    onnx2torch = _import_onnx2torch()
    try:
        module = onnx2torch.convert(graph)
    except Exception as exc:  # onnx2torch raises NotImplementedError / KeyError for ops it lacks
        raise IncompatibleError(f"cannot make this model trainable: onnx2torch fails on it ({type(exc).__name__}: "
                                f"{first_line(exc, 160)})", path) from None
    if not any(p.requires_grad for p in module.parameters()):
        raise IncompatibleError("cannot make this model trainable: onnx2torch turned none of its weights into "
                                "parameters", path)
    _check_matches(module, graph, path)
    return module.to(torch.float32)


def _import_onnx2torch() -> types.ModuleType:
    """onnx2torch imports torchvision for its NonMaxSuppression and RoiAlign converters only. torchvision
    is not a hub dependency (the PyPI wheel for torch 2.13 is a CUDA build that cannot load on the CPU
    torch): without it, those two converters raise instead, and no TFLM model has those ops."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")

        def unavailable(*_args: Any, **_kwargs: Any) -> None:
            raise NotImplementedError("torchvision is not installed")

        ops.nms = ops.roi_align = unavailable
        stub.ops = ops
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
    import onnx2torch

    return onnx2torch


def _batch_free_reshapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Normalised graphs have batch 1 baked into Reshape targets; training needs batches and pruning
    changes widths: a flattening Reshape to (1, K) or (-1, K) becomes (0, -1) (0 = keep the batch size),
    any other leading 1 becomes 0."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "Reshape" or node.input[1] not in inits:
            continue
        shape = numpy_helper.to_array(inits[node.input[1]]).astype(np.int64)
        if shape.size == 2 and shape[0] in (1, -1):
            new = np.array([0, -1], np.int64)
        elif shape.size > 2 and shape[0] == 1:
            new = np.concatenate([[0], shape[1:]]).astype(np.int64)
        else:
            continue
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(new, node.input[1]))
    return model


def _explicit_pads(model: onnx.ModelProto) -> onnx.ModelProto:
    """auto_pad SAME_UPPER/SAME_LOWER (Keras' padding="same", and hub's fold_conv_pads pass) as explicit pads,
    which onnx2torch can build (it raises NotImplementedError on auto_pad); exact for the static shapes
    normalised graphs have."""
    for node in model.graph.node:
        mode = attr(node, "auto_pad", b"NOTSET")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        shape = static_shape(model, node.input[0]) if mode.startswith("SAME") else None
        if shape is None:
            continue
        spatial = shape[2:]
        kernel = attr(node, "kernel_shape") or static_shape(model, node.input[1])[2:]
        strides = attr(node, "strides") or [1] * len(spatial)
        dilations = attr(node, "dilations") or [1] * len(spatial)
        totals = [max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
                  for n, k, s, d in zip(spatial, kernel, strides, dilations)]
        small = [t // 2 for t in totals]
        begin = small if mode == "SAME_UPPER" else [t - h for t, h in zip(totals, small)]
        set_attr(node, "pads", begin + [t - b for t, b in zip(totals, begin)])
        set_attr(node, "auto_pad", "NOTSET")
    return model


def _check_matches(module: Any, model: onnx.ModelProto, path: Path) -> None:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    x = np.random.default_rng(0).random([d if isinstance(d, int) else 1 for d in feed.shape], dtype=np.float32)
    expected = session.run(None, {feed.name: x})[0]
    with torch.no_grad():
        got = module(torch.from_numpy(x)).numpy()
    scale = max(float(np.ptp(expected)), 1e-6)
    if got.shape != expected.shape or float(np.max(np.abs(got - expected))) > ONNX_MATCH_TOLERANCE * scale:
        raise IncompatibleError("cannot make this model trainable: onnx2torch's module does not reproduce the "
                                "ONNX graph's outputs", path)


# --- data ------------------------------------------------------------------------------------

def split(data: Dataset, val: Dataset | None, seed: int) -> tuple[Dataset, Dataset]:
    """(train, validation): --val if given, else a seeded fifth of --data held out."""
    if val is not None:
        if (val.y is None) != (data.y is None):
            raise InputError("--data and --val must both have labels (y) or both have none", val.source)
        return data, val
    order = np.random.default_rng(seed).permutation(len(data.x))
    hold = max(1, len(order) // 5)

    def pick(idx: np.ndarray) -> Dataset:
        return Dataset(data.x[idx], None if data.y is None else data.y[idx], data.source)

    return pick(order[hold:]), pick(order[:hold])


# --- the whole command -----------------------------------------------------------------------

def _search_levels() -> tuple[float, ...]:
    return PRUNE_LEVELS


@dataclass
class OptimizeRequest:
    """What `hub optimize` was asked (see hub.api.optimize for the meaning of each field)."""

    model: Path
    data: Path
    val: Path | None = None
    prune_ratio: float = 0.5
    distill: bool = True
    round_to: int | None = None
    cluster: int | None = None  # values per filter (hub.optimize.cluster), then --compress
    cluster_scope: str = "layer"  # one set of values per filter, converted with per-tensor weights; or "channel"
    qat: bool = False  # quantization-aware fine-tuning (hub.optimize.qat) before conversion
    board: Any = None  # hub.knowledge.boards.Board: search for the most accurate model that fits it (hub.optimize.board_search)
    levels: tuple[float, ...] = field(default_factory=_search_levels)  # the search's pruning levels
    training: DistillOptions = field(default_factory=DistillOptions)
    input_range: tuple[float, float] = (0.0, 1.0)
    force: bool = False
    options: LoadOptions = field(default_factory=LoadOptions)


def run(request: OptimizeRequest, progress: Any, source: Any, normalised: NormalisedModel, ident: str, out_dir: Path,
        convert: Callable[..., Any]) -> tuple[Any, dict[str, Any]]:
    """Prune and distill the loaded model, convert teacher and student to int8 for TFLM with `convert`
    (hub.api.convert, handed in so this stage does not import the api above it), measure both there;
    writes the student's output folder `out_dir` (report.json with `optimize`) and returns (student
    ConvertReport, the `optimize` section)."""
    import tempfile
    import time

    import torch

    start = time.perf_counter()
    path = request.model
    with progress.stage("trainable", f"Making {path.name} a trainable module"):
        teacher = trainable(path, request.options, normalised)
    layout = source.source_layouts.get(teacher.spec.name)
    train, val = split(load_data(request.data, teacher.spec, layout, request.input_range),
                       load_data(request.val, teacher.spec, layout, request.input_range) if request.val else None,
                       request.training.seed)
    if not request.distill and train.y is None:
        raise InputError("--no-distill trains on labels alone, and --data has none (no y array)", request.data)
    if request.board is not None:
        return _board_search(request, progress, source, teacher, (train, val), ident, out_dir, convert,
                             normalised.outputs[0].name, start)
    example = torch.from_numpy(train.x[:1])
    with progress.stage("prune", f"Pruning {request.prune_ratio:.0%} of the channels"):
        before = count(teacher.module, example)
        student = prune(copy.deepcopy(teacher.module), example, request.prune_ratio, round_to=request.round_to)
        after = count(student, example)
    teacher_val = predict(teacher.module, val.x)
    if request.qat:  # the same epochs of distillation, through TFLite's int8 rounding (PTQ's comparison run)
        student = _qat(teacher, student, train, request, progress)
    elif request.prune_ratio > 0 or not request.cluster:
        student = _train(teacher, student, train, val, teacher_val, request, progress)
    if request.cluster:
        student = _cluster(teacher, student, train, val, teacher_val, request, progress)
    with tempfile.TemporaryDirectory(prefix="hub-optimize-") as tmp:
        work = Path(tmp)
        calibration = work / "calibration.npz"
        np.savez(calibration, **{teacher.spec.name: train.x})
        with progress.stage("teacher", "Converting the teacher to int8 and measuring it on TFLM"):
            teacher_report = convert(path, calibration=_in_source_layout(train.x, teacher.spec, layout, work),
                                         out=work / "teacher", options=request.options, force=True)
        student_onnx = work / f"{ident}.onnx"
        export_onnx(student, teacher.spec, normalised.outputs[0].name, student_onnx)
        with progress.stage("student", "Converting the student to int8 and measuring it on TFLM"):
            report = convert(student_onnx, calibration=calibration, out=out_dir, name=ident, force=request.force,
                             compress=request.cluster is not None,
                             per_tensor_weights=request.cluster is not None and request.cluster_scope == "layer")
        teacher_tflite = (work / "teacher" / "model.tflite").read_bytes()
    with progress.stage("measure", f"Scoring both int8 models on TFLM over {len(val.x)} validation samples"):
        section = _section(request, teacher, train, val, teacher_val, student, (before, after),
                           (teacher_report, teacher_tflite), report)
    section["seconds"] = round(time.perf_counter() - start, 1)
    report.source = {"path": str(path), "framework": source.framework,
                     "converted": "the pruned student, exported to ONNX by hub optimize"}
    _add_to_report(report, section)
    return report, section


def _board_search(request: OptimizeRequest, progress: Any, source: Any, teacher: Trainable,
                  data: tuple[Dataset, Dataset], ident: str, out_dir: Path, convert: Callable[..., Any],
                  output_name: str, start: float) -> tuple[Any, dict[str, Any]]:
    """--board: measure candidates (hub.optimize.board_search) and write the most accurate one that fits as the output."""
    import shutil
    import tempfile
    import time

    train, val = data
    teacher_val = predict(teacher.module, val.x)
    ctx = board_search.SearchContext(
        teacher, train, val, teacher_val, request, output_name, ident, convert,
        distill=lambda s: _train(teacher, s, train, val, teacher_val, request, progress),
        cluster=lambda s, n: _cluster(teacher, s, train, val, teacher_val, request, progress, n),
        qat=lambda s: _qat(teacher, s, train, request, progress))
    with tempfile.TemporaryDirectory(prefix="hub-board-search-") as tmp:
        candidates, chosen = board_search.search(ctx, request.board, Path(tmp), progress, request.levels)
        found = board_search.section(candidates, chosen, request.board, request.levels)
        if chosen is None:
            raise IncompatibleError(f"no candidate fits {request.board.name}: {board_search.closest(candidates)}")
        with atomic_folder(out_dir, request.force) as folder:
            shutil.copytree(chosen.folder, folder, dirs_exist_ok=True)
    report = chosen.report
    report.output = out_dir
    report.source = {"path": str(request.model), "framework": source.framework,
                     "converted": f"the candidate {chosen.label}, chosen by hub optimize --board"}
    section = {"search": found, "seconds": round(time.perf_counter() - start, 1)}
    _add_to_report(report, section)
    return report, section


def _qat(teacher: Trainable, student: Any, train: Dataset, request: OptimizeRequest, progress: Any) -> Any:
    """Distillation through TFLite's int8 rounding (hub.optimize.qat), with the options of a plain run."""
    from dataclasses import replace

    from hub.optimize.qat import quantization_aware  # why here: it imports torch, needed only with --qat

    options = replace(request.training, alpha=request.training.alpha if request.distill else 0.0)
    with progress.stage("qat", f"Quantization-aware fine-tuning for {options.epochs} epochs"):
        return quantization_aware(student, train.x, teacher.module, train.y, options,
                                  probabilities=teacher.probabilities, reconstruction=teacher.reconstruction)


def _cluster(teacher: Trainable, student: Any, train: Dataset, val: Dataset, teacher_val: np.ndarray,
             request: OptimizeRequest, progress: Any, clusters: int | None = None) -> Any:
    """k-means every filter to `clusters` (default request.cluster) values, then fine-tune the shared values
    (hub.optimize.cluster). Per layer, the student first goes through its ONNX graph, which folds BatchNorm into the
    convolutions: a folded BatchNorm scales each channel apart, which one set of values per layer cannot take."""
    import tempfile

    clusters = clusters or request.cluster
    if request.cluster_scope == "layer":
        with tempfile.TemporaryDirectory(prefix="hub-fold-") as tmp:
            path = Path(tmp) / "student.onnx"
            export_onnx(student, teacher.spec, "output", path)
            student = onnx_to_torch(onnx.load(str(path)), request.model)
    with progress.stage("cluster", f"Clustering each filter to {clusters} values"):
        clustered = cluster(student, clusters, scope=request.cluster_scope)
    return _train(teacher, student, train, val, teacher_val, request, progress, after_step=lambda: project(clustered),
                  what="Fine-tuning the clusters")


def _train(teacher: Trainable, student: Any, train: Dataset, val: Dataset, teacher_val: np.ndarray,
           request: OptimizeRequest, progress: Any, after_step: Callable[[], None] | None = None,
           what: str | None = None) -> Any:
    import time
    from dataclasses import replace

    what = what or ("Distilling" if request.distill else "Training on labels")
    t0 = time.perf_counter()
    with bar(what, request.training.epochs, progress.enabled) as step:  # a bar, not a stage: one live display
        def on_epoch(epoch: int, loss: float) -> None:
            s = scores(predict(student, val.x), teacher_val, val.y, teacher.reconstruction)
            shown = f"val accuracy {s['accuracy']:.3f}" if s["accuracy"] is not None else f"agreement {s['agreement']:.3f}"
            step(f"epoch {epoch}  loss {loss:.4f}  {shown}")

        options = replace(request.training, alpha=request.training.alpha if request.distill else 0.0, on_epoch=on_epoch,
                          after_step=after_step)
        student = distill(teacher.module, student, train.x, train.y, options,
                          probabilities=teacher.probabilities, reconstruction=teacher.reconstruction)
    progress.timings["train"] = round(progress.timings.get("train", 0.0) + time.perf_counter() - t0, 3)
    return student


def _in_source_layout(x: np.ndarray, spec: TensorSpec, layout: str | None, work: Path) -> Path:
    """The teacher's calibration file in the layout its source framework reads (Keras: NHWC), so that
    hub.convert.calibration takes an ambiguous shape (C == H == W) the right way round."""
    path = work / "teacher_calibration.npz"
    np.savez(path, **{spec.name: np.transpose(x, channels_last(x.ndim)) if layout == "NHWC" else x})
    return path


def _section(request: OptimizeRequest, teacher: Trainable, train: Dataset, val: Dataset, teacher_val: np.ndarray,
             student: Any, counts: tuple[dict, dict], teacher_converted: tuple[Any, bytes], report: Any) -> dict[str, Any]:
    """report.json's `optimize`: before (teacher) and after (student), every memory figure from TFLM."""
    teacher_report, teacher_tflite = teacher_converted
    out_shape = tuple(report.model.outputs[0]["shape"]) if report.model.outputs else None
    tflite = {"teacher": teacher_tflite, "student": (report.output / "model.tflite").read_bytes()}
    name = teacher.spec.name
    on_tflm = {side: tflm_outputs(data, val.x, name, out_shape) for side, data in tflite.items()}
    floats = {"teacher": teacher_val, "student": predict(student, val.x)}
    sides = {}
    for side, counted, converted in (("teacher", counts[0], teacher_report), ("student", counts[1], report)):
        verified = converted.verification
        fl = scores(floats[side], teacher_val, val.y, teacher.reconstruction)
        q = scores(on_tflm[side], teacher_val, val.y, teacher.reconstruction)
        sides[side] = {**counted, "flash_bytes": converted.model.tflite_bytes,
                       "arena_bytes": verified.memory.arena_bytes if verified else None,
                       "weight_bytes": weight_bytes(read_tflite(tflite[side])),
                       "invoke_us_host": verified.tflm.invoke_us_host if verified else None,
                       "float_accuracy": fl["accuracy"], "int8_accuracy_tflm": q["accuracy"],
                       "float_agreement": fl["agreement"], "int8_agreement_tflm": q["agreement"]}
    change = {k: _relative(sides["teacher"][k], sides["student"][k])
              for k in ("params", "macs", "flash_bytes", "weight_bytes", "arena_bytes", "invoke_us_host")}
    t = request.training
    return {"prune_ratio": request.prune_ratio, "round_to": request.round_to, "cluster": request.cluster,
            "cluster_scope": request.cluster_scope if request.cluster else None, "qat": request.qat,
            "distill": request.distill,
            "route": teacher.route, "task": "reconstruction" if teacher.reconstruction else "classification",
            "labels": train.y is not None, "agreement": "mean cosine" if teacher.reconstruction else "top-1",
            "epochs": t.epochs, "lr": t.lr, "temperature": t.temperature,
            "alpha": (1.0 if train.y is None else t.alpha) if request.distill else 0.0, "seed": t.seed,
            "train_samples": len(train.x), "validation": {"source": str(request.val or request.data),
                                                          "samples": len(val.x), "held_out": request.val is None},
            "teacher": sides["teacher"], "student": sides["student"], "change": change}


def _relative(before: int | None, after: int | None) -> float | None:
    """after / before - 1 (-0.4 = 40 % smaller)."""
    return None if not before or after is None else round(after / before - 1, 4)


def _add_to_report(report: Any, section: dict[str, Any]) -> None:
    """report.json and report.html of the student's folder, rewritten with `optimize` (and the teacher's file
    as the source)."""
    document = {**report.to_dict(), "optimize": section}
    write_text_atomic(report.output / "report.json", to_json(document))
    write_html(document, report.output / "report.html")
