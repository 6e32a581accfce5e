"""PyTorch adapter: TorchScript, torch.export archives, factories, state_dicts and (trusted) pickles -> ONNX.

Formats, told apart by content (sniffing never imports torch):
- TorchScript `.pt` (torch.jit.save): a zip with `<top>/constants.pkl` and `<top>/code/`.
  It records no input shapes, except ours: `hub.json` in its extra files (fixtures do that).
- torch.export archive `.pt2` (torch.export.save): a zip with `<top>/archive_format` and
  `<top>/models/*.json`; input shapes come from the exported program.
- torch.save file: a zip with `<top>/data.pkl` (or the pre-1.6 pickle with torch's magic number).
  Loaded with `weights_only=True`: a state_dict then needs `--factory`; a whole pickled module
  needs `--trust-pickle`, because unpickling it runs code from the file.
- A Python factory file `.py`, with `--factory NAME` (or `path.py:NAME` / `module:NAME`).

Export: the TorchScript-based exporter (`dynamo=False`): it takes ScriptModules, needs no
onnxscript, writes one self-contained file, and names nodes after the module path
(`/layer1/conv1/Conv`), which we also store per node as metadata `pytorch.module`. When it refuses
(F.fold: no aten::col2im symbolic at opset 17, and its opset-18 one fails), the dynamo exporter
(torch.export + onnxscript) is tried; SourceModel.exporter says which one wrote the graph.
"""
from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import logging
import math
import re
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import onnx

from hub.artifacts import MAX_INPUT_ELEMENTS, LoadOptions, SourceModel
from hub.errors import IncompatibleError, InputError, first_line
from hub.graph.network import module_path_from_name
from hub.quiet import silenced_fds

OPSET = 17  # within the normaliser's 13-18; LayerNormalization is native from 17
DYNAMO_OPSET = 18  # the dynamo exporter's lowest (Col2Im, F.fold, is an opset-18 op)
EXPORTER_NAMES = {"torchscript": "TorchScript-based exporter", "dynamo": "dynamo exporter (torch.export)"}
HUB_META = "hub.json"  # optional TorchScript extra file: {"input_shapes": {name: shape}}
ZIP_MAGIC = b"PK\x03\x04"
# torch.save before 1.6 (non-zip): pickle protocol 2, then the magic number 0x1950a86a20f9469cfc6c as a long.
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the dynamo exporter colours its messages
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class PyTorchAdapter:
    framework = "pytorch"

    def sniff(self, path: Path) -> bool:
        path = Path(path)
        if _factory_file(path) is not None:
            return True
        if not path.is_file():
            return False
        return _kind(path) is not None or _python_source(path)

    def load(self, path: Path, options: LoadOptions) -> SourceModel:
        path = Path(path)
        factory_file = _factory_file(path)
        if factory_file is not None:  # MODEL given as path.py:NAME
            return self._from_factory(path, f"{factory_file[0]}:{factory_file[1]}", None, options)
        if _python_source(path):
            return self._from_factory(path, _factory_in_file(path, options.factory), None, options)
        kind = _kind(path)
        if kind is None:
            raise InputError("not a PyTorch file (TorchScript, torch.export .pt2, torch.save or a .py factory)", path)
        _check_zip(path, kind)
        if kind == "torchscript":
            return self._from_torchscript(path, options)
        if kind == "export":
            return self._from_exported(path, options)
        return self._from_torch_save(path, options)

    # -- one method per format --------------------------------------------------------------

    def _from_torchscript(self, path: Path, options: LoadOptions) -> SourceModel:
        import torch

        extra = {HUB_META: ""}
        with _torch_errors(path, "TorchScript archive"):
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        _check_storages(module, path)
        names = [a.name for a in module.forward.schema.arguments[1:]]  # [0] is self
        stored = _stored_shapes(extra[HUB_META])
        shapes = _resolve_shapes(names, options, path, found=stored,
                                 why="TorchScript does not record input shapes")
        return _export(module, shapes, path, "torchscript")

    def _from_exported(self, path: Path, options: LoadOptions) -> SourceModel:
        import torch

        with _torch_errors(path, "torch.export archive"), _quiet_torch_logs():
            program = torch.export.load(str(path))
        recorded = _exported_shapes(program)
        # A dynamic batch becomes options.batch; other dynamic dimensions need --input-shape.
        found = {name: tuple(options.batch if i == 0 and d is None else d for i, d in enumerate(dims))
                 for name, dims in recorded.items() if None not in dims[1:]}
        dynamic = ", ".join(f"{n} {_show(d)}" for n, d in recorded.items() if n not in found)
        shapes = _resolve_shapes(list(recorded), options, path, found=found,
                                 why=f"the exported program has dynamic dimensions ({dynamic})")
        for name, dims in recorded.items():
            fixed = [(i, d) for i, d in enumerate(dims) if d is not None and i > 0]
            if len(shapes[name]) != len(dims) or any(shapes[name][i] != d for i, d in fixed):
                raise InputError(f"--input-shape {_show(shapes[name])} for {name!r} does not match the "
                                 f"exported program's shape {_show(dims)} (? = dynamic)", path)
        return _export(_exported_module(program, shapes, recorded, path), shapes, path, "torch.export")

    def _from_torch_save(self, path: Path, options: LoadOptions) -> SourceModel:
        import torch

        obj = _torch_load(path, options)
        if isinstance(obj, dict):  # a trusted checkpoint such as {"epoch": 3, "model": <module>}
            modules = [v for v in obj.values() if isinstance(v, torch.nn.Module)]
            obj = modules[0] if len(modules) == 1 else obj
        if isinstance(obj, torch.nn.Module):
            shapes = _resolve_shapes(_forward_names(obj), options, path, found={},
                                     why="a pickled module does not record input shapes")
            return _export(obj, shapes, path, "pickled module")
        state = _state_dict_of(obj, path)
        if not options.factory:
            raise InputError("this file holds only weights (a state_dict), not the model's code", path,
                             hint="pass --factory module:function or --factory path.py:Class that builds the model")
        return self._from_factory(path, options.factory, state, options)

    def _from_factory(self, path: Path, spec: str, state: dict | None, options: LoadOptions) -> SourceModel:
        module = _build(spec, path)
        if state is not None:
            _load_state(module, state, spec, path)
        shapes = _resolve_shapes(_forward_names(module), options, path, found={},
                                 why=f"the factory {spec} does not say its input shapes")
        return _export(module, shapes, path, "state_dict + factory" if state is not None else "factory")


# -- sniffing (no torch) --------------------------------------------------------------------

def _kind(path: Path) -> str | None:
    """"torchscript", "export", "torch.save" or None, from the file's bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
    except OSError:
        return None
    if head.startswith(LEGACY_MAGIC):
        return "torch.save"
    if not head.startswith(ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        # Truncated: no central directory. The local headers at the start still name the members,
        # so a damaged PyTorch file gets a precise error rather than "unknown format".
        names = [n.decode("utf-8", "replace") for n in _local_names(head)]
    return _kind_from_names(names)


def _kind_from_names(names: list[str]) -> str | None:
    # torch writes every member under one top folder: strip it.
    inner = {n.split("/", 1)[1] for n in names if "/" in n}
    if "archive_format" in inner or any(n.startswith(("models/", "data/weights/")) for n in inner):
        return "export"
    if "constants.pkl" in inner or any(n.startswith("code/") for n in inner):
        return "torchscript"
    if "data.pkl" in inner or "byteorder" in inner:
        return "torch.save"
    # Only the first members of a truncated file may be known: torch's own storage names.
    if any(re.fullmatch(r"(data/\d+|extra/.+|\.data/.+|version)", n) for n in inner):
        return "torch.save"
    return None


def _local_names(head: bytes) -> Iterator[bytes]:
    """Member names from the zip local file headers found in `head`."""
    start = 0
    while (i := head.find(ZIP_MAGIC, start)) >= 0 and i + 30 <= len(head):
        n = int.from_bytes(head[i + 26:i + 28], "little")
        yield head[i + 30:i + 30 + n]
        start = i + 4


def _python_source(path: Path) -> bool:
    """A .py file (or one with a python shebang) that parses as Python; parsing runs nothing."""
    if not path.is_file() or path.stat().st_size > 4 << 20:
        return False
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if path.suffix != ".py" and not (text.startswith("#!") and "python" in text.splitlines()[0]):
        return False
    try:
        ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return True


def _factory_file(path: Path) -> tuple[Path, str] | None:
    """`net.py:TinyNet` given as the MODEL -> (net.py, "TinyNet") when net.py exists."""
    text = str(path)
    file, sep, name = text.rpartition(":")
    if sep and file.endswith(".py") and name.isidentifier() and Path(file).is_file():
        return Path(file), name
    return None


# -- loading ----------------------------------------------------------------------------------

def _check_zip(path: Path, kind: str) -> None:
    """One clear line for a damaged archive (torch's own message is a paragraph)."""
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            return  # pre-1.6 torch.save pickle: torch.load reports damage itself
    try:
        with zipfile.ZipFile(path) as z:
            z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise InputError("this PyTorch archive is truncated or corrupt: it has no readable zip directory",
                         path, hint="save or copy the file again") from None


@contextlib.contextmanager
def _torch_errors(path: Path, what: str) -> Iterator[None]:
    """torch raises RuntimeError with multi-line text for damaged files: make it one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (RuntimeError, zipfile.BadZipFile, KeyError, EOFError, ValueError,
            TypeError, AttributeError, AssertionError) as exc:  # fuzz: torch.export.load on altered JSON
        raise InputError(f"cannot read the {what}: {first_line(exc, 200)}", path) from None


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch.export.load logs a full traceback before its fallback; the user gets our one line."""
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _torch_load(path: Path, options: LoadOptions) -> Any:
    import pickle

    import torch

    try:
        with _torch_errors(path, "torch.save file"):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not options.trust_pickle:
            raise InputError("this file is a whole pickled Python object (torch.save(model)); "
                             "unpickling it runs code from the file", path,
                             hint="pass --trust-pickle if you trust its source, or save a state_dict and "
                                  "pass --factory") from None
    # The user vouched for the file. Its classes are imported by name: from here or beside the file.
    with _on_sys_path(Path.cwd(), path.resolve().parent), _torch_errors(path, "pickled module"):
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except (ImportError, AttributeError) as exc:
            raise InputError(f"the pickled module needs Python code that cannot be imported ({exc})", path,
                             hint="run hub from the folder that holds that module, or save a state_dict "
                                  "and pass --factory") from None


def _check_storages(module: Any, path: Path) -> None:
    """Every weight must have its bytes. torch.jit.load does not check: a TorchScript archive with an
    emptied data/N member loads, then running it segfaults (fuzz: resnet_tiny.pt, seed 20057)."""
    import itertools

    for name, tensor in itertools.chain(module.named_parameters(), module.named_buffers()):
        if tensor.numel() == 0:
            continue
        last = tensor.storage_offset() + sum((n - 1) * st for n, st in zip(tensor.shape, tensor.stride()))
        try:  # an empty member leaves a storage without memory: touching its pointer raises
            storage = tensor.untyped_storage()
            missing = storage.data_ptr() == 0 or (last + 1) * tensor.element_size() > storage.nbytes()
        except RuntimeError:
            missing = True
        if missing:
            raise InputError(f"the weights of {name!r} are truncated: the archive holds fewer bytes than the "
                             "tensor needs", path, hint="save or copy the file again")


def _state_dict_of(obj: Any, path: Path) -> dict:
    """A state_dict, also from the usual checkpoint dicts ({"state_dict": ...}, {"model": ...})."""
    import torch

    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise InputError(f"this torch.save file holds a {type(obj).__name__}, not a model or a state_dict of tensors", path)


def _exported_module(program: Any, shapes: dict, recorded: dict, path: Path) -> Any:
    """An nn.Module the TorchScript-based exporter can trace, with the module tree restored
    (unflatten), so ONNX node names keep module paths."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if any(None in dims for dims in recorded.values()):
            # Tracing cannot handle symbolic sizes: specialise the program to the static shapes first.
            args = tuple(torch.zeros(s) for s in shapes.values())
            try:
                program = torch.export.export(program.module(), args, strict=False)
            except Exception as exc:
                raise InputError(f"the exported program does not accept input shape "
                                 f"{', '.join(_show(s) for s in shapes.values())}: {_first_line(exc)}", path,
                                 hint="check --input-shape") from None
        try:
            return torch.export.unflatten(program)
        except Exception:
            return program.module()


def _stored_shapes(text: str | bytes) -> dict[str, tuple[int, ...]]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
        return {str(k): tuple(int(d) for d in v) for k, v in doc.get("input_shapes", {}).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


def _exported_shapes(program: Any) -> dict[str, tuple[int | None, ...]]:
    """User inputs of an ExportedProgram with their recorded shapes (None = dynamic)."""
    user = set(program.graph_signature.user_inputs)
    shapes = {}
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user:
            val = node.meta.get("val")
            dims = tuple(d if isinstance(d, int) else None for d in getattr(val, "shape", ()))
            shapes[node.name] = dims
    return shapes


# -- factories --------------------------------------------------------------------------------

def _factory_in_file(path: Path, factory: str | None) -> str:
    """MODEL is a .py file: --factory names the class or function in it."""
    if not factory:
        raise InputError("this is a Python file: name the class or function that builds the model", path,
                         hint=f"pass --factory NAME, or give the model as {path}:NAME")
    return factory if ":" in factory else f"{path}:{factory}"


def _build(spec: str, path: Path) -> Any:
    """Import `module:attr` or `file.py:attr` and call it with no arguments -> nn.Module."""
    import torch

    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(f"--factory {spec!r} is not module:function or path.py:Class", path)
    mod = _import_factory_module(target, spec, path)
    obj: Any = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--factory {spec!r}: {target} has no {attr!r}", path)
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"--factory {spec!r} is not a class or function", path)
    try:
        module = obj()
    except Exception as exc:
        raise InputError(f"--factory {spec!r} failed when called with no arguments: "
                         f"{type(exc).__name__}: {_first_line(exc)}", path) from None
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--factory {spec!r} returned a {type(module).__name__}, not a torch.nn.Module", path)
    return module


def _import_factory_module(target: str, spec: str, path: Path) -> Any:
    try:
        if target.endswith(".py"):
            file = Path(target)
            if not file.is_file():
                raise InputError(f"--factory {spec!r}: no such file {target}", path)
            name = f"_hub_factory_{abs(hash(str(file.resolve())))}"
            module_spec = importlib.util.spec_from_file_location(name, file)
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module  # dataclasses and pickling look modules up by name
            with _on_sys_path(file.resolve().parent):
                module_spec.loader.exec_module(module)
            return module
        with _on_sys_path(Path.cwd()):
            return importlib.import_module(target)
    except InputError:
        raise
    except Exception as exc:  # the user's code failed to import: say where, in one line
        raise InputError(f"--factory {spec!r}: importing {target} failed: {type(exc).__name__}: "
                         f"{_first_line(exc)}", path) from None


def _load_state(module: Any, state: dict, spec: str, path: Path) -> None:
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
        raise InputError(f"the state_dict does not fit the model built by {spec}: {'; '.join(parts)}", path)


@contextlib.contextmanager
def _on_sys_path(*folders: Path) -> Iterator[None]:
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for folder in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)


def _forward_names(module: Any) -> list[str]:
    """Tensor argument names of forward(), for ONNX input names."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return ["input"]
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
             and p.default is inspect.Parameter.empty]
    return names or ["input"]


# -- shapes -----------------------------------------------------------------------------------

def _resolve_shapes(names: list[str], options: LoadOptions, path: Path, found: dict, why: str
                    ) -> dict[str, tuple[int, ...]]:
    """One static shape per forward() input: from --input-shape, else what the file recorded."""
    given = dict(options.input_shapes)
    unknown = [n for n in given if n is not None and n not in names]
    if unknown:
        raise InputError(f"--input-shape names {', '.join(map(repr, unknown))}, but the model's inputs are "
                         f"{', '.join(map(repr, names))}", path)
    if None in given:
        first = names[0]
        if first in given:
            raise InputError(f"--input-shape given twice for input {first!r} (with and without a name)", path)
        given[first] = given.pop(None)
    shapes = {}
    for name in names:
        shape = given.get(name) or found.get(name)
        if shape is None:
            flag = "--input-shape 1,3,32,32" if len(names) == 1 else f"--input-shape {name}=1,3,32,32"
            raise InputError(f"no input shape for {name!r}: {why or 'it is not recorded'}", path,
                             hint=f"pass {flag} with the model's real shape")
        shapes[name] = tuple(int(d) for d in shape)
        if any(d <= 0 for d in shapes[name]) or math.prod(shapes[name]) > MAX_INPUT_ELEMENTS:
            # fuzz: a hub.json recording 2^40 elements made torch.rand fail allocating terabytes
            raise InputError(f"input shape {_show(shapes[name])} for {name!r} is absurd (non-positive or over "
                             f"{MAX_INPUT_ELEMENTS:,} elements)", path, hint="pass --input-shape with the real shape")
    return shapes


def _show(dims: tuple) -> str:
    return "x".join("?" if d is None else str(d) for d in dims)


# -- export -----------------------------------------------------------------------------------

def _export(module: Any, shapes: dict[str, tuple[int, ...]], path: Path, fmt: str) -> SourceModel:
    import torch

    gen = torch.Generator().manual_seed(0)  # tracing inputs; the global RNG stays the user's
    args = tuple(torch.rand(shape, generator=gen) for shape in shapes.values())
    if hasattr(module, "eval"):
        module.eval()
    outputs = _run(module, args, shapes, path)
    flat = [t for t in _flatten(outputs) if isinstance(t, torch.Tensor)]
    output_names = ["output"] if len(flat) == 1 else [f"output_{i}" for i in range(len(flat))]
    model, exporter = _to_onnx(module, args, list(shapes), output_names, path)
    _annotate(model, fmt)
    layouts = {name: ("NCHW" if len(shape) == 4 else None) for name, shape in shapes.items()}
    return SourceModel(path=path, framework="pytorch", onnx_model=model, source_layouts=layouts,
                       notes=[f"PyTorch {fmt}, exported to ONNX by the {EXPORTER_NAMES[exporter]}"], exporter=exporter,
                       run=_forward(module, list(shapes), output_names), run_module=_submodule_runner(module))


def _to_onnx(module: Any, args: tuple, input_names: list[str], output_names: list[str],
             path: Path) -> tuple[onnx.ModelProto, str]:
    """The ONNX graph and the exporter that wrote it: the TorchScript exporter first, the dynamo one when it
    refuses (it has no symbolic for aten::col2im, F.fold, at OPSET; the dynamo exporter writes Col2Im)."""
    refusals = []
    for exporter, export in (("torchscript", _export_torchscript), ("dynamo", _export_dynamo)):
        try:
            with silenced_fds(), warnings.catch_warnings(), _quiet_torch_logs():
                warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
                return export(module, args, input_names, output_names), exporter
        except Exception as exc:
            cause = _root_cause(exc)
            refusals.append(f"{EXPORTER_NAMES[exporter]}: {type(cause).__name__}: {_first_line(cause)}")
    raise IncompatibleError(f"PyTorch cannot export this model to ONNX ({'; '.join(refusals)})", path)


def _export_torchscript(module: Any, args: tuple, input_names: list[str], output_names: list[str]) -> onnx.ModelProto:
    import torch

    _register_symbolics()
    buffer = io.BytesIO()
    torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                      output_names=output_names, do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
    return onnx.load_from_string(buffer.getvalue())


def _export_dynamo(module: Any, args: tuple, input_names: list[str], output_names: list[str]) -> onnx.ModelProto:
    """torch.export, then ONNX (needs onnxscript). A ScriptModule is first turned into an ExportedProgram:
    the dynamo exporter refuses ScriptModules and names torch's TS2EPConverter for them."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        from torch._export.converter import TS2EPConverter  # why here: private torch API, only for this fallback

        module = TS2EPConverter(module, args).convert()
    program = torch.onnx.export(module, args, dynamo=True, opset_version=DYNAMO_OPSET, input_names=input_names,
                                output_names=output_names)
    model = program.model_proto
    # A program from TS2EPConverter declares symbolic input dimensions: the shapes we exported with are the model's.
    for value, arg in zip(model.graph.input, args):
        value.type.tensor_type.shape.ClearField("dim")
        for d in arg.shape:
            value.type.tensor_type.shape.dim.add().dim_value = int(d)
    return model


def _forward(module: Any, input_names: list[str], output_names: list[str]):
    """The module itself on one sample: the reference the exported graph and the TFLite model answer to."""
    import torch

    def run(sample: dict) -> dict:
        args = tuple(torch.from_numpy(np.ascontiguousarray(sample[name], dtype=np.float32)) for name in input_names)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = [t for t in _flatten(module(*args)) if isinstance(t, torch.Tensor)]
        return {name: t.detach().float().numpy() for name, t in zip(output_names, flat)}

    return run


def _submodule_runner(module: Any):
    """One leaf submodule on given inputs: where an export diverges from the module (hub.verify.export_check).
    Called with the exported graph's own input to that module's nodes, since forward hooks do not fire in
    TorchScript modules."""
    import torch

    def run(path: str, inputs: list[np.ndarray]) -> np.ndarray | None:
        try:
            sub = dict(module.named_modules())[path]  # get_submodule is refused by ScriptModules
            if next(iter(sub.children()), None) is not None:  # a container: its nodes are only part of its forward
                return None
            args = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in inputs]
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flat = [t for t in _flatten(sub(*args)) if isinstance(t, torch.Tensor)]
        except Exception:  # not a module, or it does not take these inputs: not localisable there
            return None
        return flat[0].detach().float().numpy() if flat else None

    return run


def _register_symbolics() -> None:
    """Teach the TorchScript exporter the aten ops it has no ONNX form for at OPSET.

    nn.RMSNorm (aten::rms_norm): torch 2.13 refuses it at every opset ("not supported"), and the
    dynamo exporter needs onnxscript. Written as hand-written RMSNorms export,
    x * Pow(ReduceMean(x * x) + eps, -0.5) * weight, which onnx2tf and the TFLite converter lower to
    MUL/MEAN/ADD/RSQRT (int8 and int16x8 on TFLM; see hub/graph/rules/decompose_rmsnorm.py).
    """
    import torch
    from torch.onnx import symbolic_helper

    def rms_norm(g, x, normalized_shape, weight, eps):
        dims = symbolic_helper._get_const(normalized_shape, "is", "normalized_shape")
        eps = None if symbolic_helper._is_none(eps) else symbolic_helper._get_const(eps, "f", "eps")
        eps = torch.finfo(torch.float32).eps if eps is None else eps  # torch's default for a float32 input
        mean_square = g.op("ReduceMean", g.op("Mul", x, x), axes_i=list(range(-len(dims), 0)), keepdims_i=1)
        eps_const = g.op("Constant", value_t=torch.tensor(eps, dtype=torch.float32))
        minus_half = g.op("Constant", value_t=torch.tensor(-0.5, dtype=torch.float32))
        normed = g.op("Mul", x, g.op("Pow", g.op("Add", mean_square, eps_const), minus_half))
        return normed if symbolic_helper._is_none(weight) else g.op("Mul", normed, weight)

    torch.onnx.register_custom_op_symbolic("aten::rms_norm", rms_norm, OPSET)


def _run(module: Any, args: tuple, shapes: dict, path: Path) -> Any:
    """Run once first: a wrong --input-shape is an input error, not an export failure."""
    import torch

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return module(*args)
    except Exception as exc:
        shown = ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items())
        raise InputError(f"the model does not run on input shape {shown}: {type(exc).__name__}: "
                         f"{_first_line(exc)}", path, hint="check --input-shape") from None


def _flatten(value: Any) -> list:
    from torch.utils._pytree import tree_flatten

    return tree_flatten(value)[0]


def _annotate(model: onnx.ModelProto, fmt: str) -> None:
    """Keep where each node came from: analysis shows the PyTorch module path per node."""
    for node in model.graph.node:
        module_path = module_path_from_name(node.name)
        if module_path:
            entry = node.metadata_props.add()
            entry.key, entry.value = "pytorch.module", module_path
    for key, value in (("source_framework", "pytorch"), ("source_format", fmt)):
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception: the dynamo exporter wraps the op it could not translate in a generic
    "Failed to convert the exported program" ConversionError."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _first_line(exc: BaseException) -> str:
    """The exception's first line, minus torch's pointers to warnings the CLI does not show."""
    line = re.sub(r"\s*Please check the warnings above\.?", "", ANSI.sub("", first_line(exc))).strip()
    return line or type(exc).__name__


def trainable_module(path: Path, options: LoadOptions) -> Any | None:
    """The nn.Module itself, for training (hub.optimize.run): from a factory (with its state_dict) or a trusted
    pickle. None for TorchScript and torch.export archives: their parameters are trainable, but their
    layers are not nn.Conv2d/nn.Linear modules, which structured pruning needs to rewrite."""
    import torch

    path = Path(path)
    factory_file = _factory_file(path)
    if factory_file is not None:
        return _build(f"{factory_file[0]}:{factory_file[1]}", path)
    if _python_source(path):
        return _build(_factory_in_file(path, options.factory), path)
    if _kind(path) != "torch.save":
        return None
    obj = _torch_load(path, options)
    if isinstance(obj, dict):
        modules = [v for v in obj.values() if isinstance(v, torch.nn.Module)]
        obj = modules[0] if len(modules) == 1 else obj
    if isinstance(obj, torch.nn.Module):
        return obj
    module = _build(options.factory, path)  # the adapter's load already refused a state_dict without --factory
    _load_state(module, _state_dict_of(obj, path), options.factory, path)
    return module
