"""Keras / TensorFlow adapter: `.keras` (Keras 3), legacy Keras 2 `.h5`, SavedModel folders -> ONNX.

The model is traced as a `tf.function` with fixed input shapes and exported by
tf2onnx. 4-D float inputs are exported NCHW (`inputs_as_nchw`): onnx2tf expects
NCHW ONNX and fails on real NHWC networks (field notes, MobileNetV2), so the
ONNX input differs from the user's NHWC data; `source_layouts` records that.
Loading is safe by default: Lambda layers and custom objects (code stored in,
or named by, the file) need `trust_code`.
"""
from __future__ import annotations

import io
import json
import math
import os
import re
import sys
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from hub.artifacts import LoadOptions, SourceModel
from hub.child import run_python_module
from hub.errors import IncompatibleError, InputError
from hub.quiet import silenced_fds

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_SIGNATURE = b"PK\x03\x04"
# Lowest opset the pipeline takes (hub.graph.normalise MIN_OPSET): what onnx2tf is written against.
OPSET = 13
HDF5_PROBE_TIMEOUT_S = 60
TRUST_HINT = "pass --trust-code only if you trust the file: loading it runs code it contains or names"


class KerasAdapter:
    framework = "keras"

    def sniff(self, path: Path) -> bool:
        """Cheap content check, without importing tensorflow."""
        return _kind(Path(path)) is not None

    def load(self, path: Path, options: LoadOptions) -> SourceModel:
        path = Path(path)
        kind = _kind(path)
        if kind is None:
            raise InputError("not a .keras archive, Keras .h5 file or SavedModel folder", path)
        if kind == "savedmodel":
            path = path if path.is_dir() else path.parent
        else:
            _probe_hdf5(path, kind)
            _refuse_untrusted(_read_config(path, kind), options.trust_code, path)
        _quiet_tensorflow()
        with silenced_fds(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "savedmodel":
                fn, inputs = _savedmodel_function(path)
            else:
                fn, inputs = _keras_function(_load_keras(path, kind, options.trust_code))
            specs = _static_specs(inputs, options, path)
            onnx_model = _to_onnx(fn, specs, path)
        layouts = {s.name: ("NHWC" if _is_image(s) else None) for s in specs}
        notes = [f"input {n!r} exported NCHW for onnx2tf; your data is NHWC" for n, v in layouts.items() if v]
        return SourceModel(path=path, framework=self.framework, onnx_model=onnx_model,
                           source_layouts=layouts, notes=notes, run=_forward(fn, specs, layouts, onnx_model))


def _forward(fn: Callable, specs: list, layouts: dict[str, str | None], onnx_model: Any) -> Callable:
    """The Keras model (or SavedModel signature) itself on one sample given in the ONNX graph's layout:
    image inputs go back to NHWC; outputs are named as the exported graph names them."""
    import numpy as np
    import tensorflow as tf

    onnx_outputs = [o.name for o in onnx_model.graph.output]

    def run(sample: dict) -> dict:
        args = [np.transpose(sample[s.name], (0, 2, 3, 1)) if layouts.get(s.name) == "NHWC" else sample[s.name]
                for s in specs]
        with silenced_fds():
            result = fn(*[tf.constant(a, dtype=s.dtype) for a, s in zip(args, specs)])
        values = [np.asarray(result[k]) for k in result]
        named = {k: np.asarray(v) for k, v in result.items()}
        if set(onnx_outputs) <= set(named):
            return {name: named[name] for name in onnx_outputs}
        return dict(zip(onnx_outputs, values))

    return run


# --- sniffing (no tensorflow) -------------------------------------------------------------

def _kind(path: Path) -> str | None:
    """"savedmodel", "keras" (Keras 3 zip), "h5" or None."""
    if path.is_dir():
        return "savedmodel" if (path / "saved_model.pb").is_file() else None
    if path.name == "saved_model.pb" and path.is_file():
        return "savedmodel"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head == HDF5_SIGNATURE:
        # Any HDF5 file is ours: a weights-only file then gets a precise error in load()
        # instead of "unknown format".
        return "h5"
    if head[:4] == ZIP_SIGNATURE:
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except (zipfile.BadZipFile, OSError, ValueError):  # fuzz: member names that are not UTF-8
            # A truncated zip has lost its directory; a .keras name still says whose it is,
            # so load() can call it truncated rather than "unknown format".
            return "keras" if path.suffix.lower() == ".keras" else None
        # TorchScript and torch.export archives are zips too, but keep everything in a folder.
        if "config.json" in names and any(n.startswith("model.weights") for n in names):
            return "keras"
    return None


def _probe_hdf5(path: Path, kind: str) -> None:
    """The HDF5 C library can loop forever or crash on a corrupt file, where no Python timeout reaches
    (fuzz: a spliced .h5 hung `hub check` in attrs.get("model_config")). Read everything Keras will
    read in a child with a time bound first; ordinary read errors are left to the precise messages
    of _read_config and Keras."""
    result = run_python_module("hub.adapters.keras", [str(path.resolve()), kind], timeout_s=HDF5_PROBE_TIMEOUT_S,
                               memory_mb=4096)
    if result.timed_out:
        raise InputError(f"the file's HDF5 data is corrupt: reading it did not finish within {HDF5_PROBE_TIMEOUT_S} s",
                         path) from None
    if result.returncode != 0:
        why = result.signal_name or result.last_error_line() or f"exit code {result.returncode}"
        raise InputError(f"the file's HDF5 data is corrupt: reading it crashed the reader ({why})", path) from None


def _read_all_hdf5(path: str, kind: str) -> None:
    """Every attribute and dataset of the .h5 (or a .keras archive's model.weights.h5); errors are fine."""
    import h5py

    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as z:
                source: Any = io.BytesIO(z.read("model.weights.h5"))
        else:
            source = path
        with h5py.File(source, "r") as f:
            def read(name: str, obj: Any) -> None:
                dict(obj.attrs.items())
                if isinstance(obj, h5py.Dataset):
                    obj[()]

            dict(f.attrs.items())
            f.visititems(read)
    except Exception:  # noqa: BLE001 - the in-process reader reports ordinary errors precisely
        pass


def _read_config(path: Path, kind: str) -> dict:
    """The model's JSON config, read without tensorflow (h5py ships with it)."""
    try:
        if kind == "keras":
            with zipfile.ZipFile(path) as z:
                raw: Any = z.read("config.json")
        else:
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
    except Exception as exc:  # zipfile/h5py raise many types for truncated or corrupt files
        raise InputError(f"cannot read the Keras model, the file looks corrupt or truncated: {_first_line(exc)}",
                         path) from None
    if raw is None:
        raise InputError("this HDF5 file has no model_config: it holds weights only "
                         "(save the whole model with model.save)", path)
    try:
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (ValueError, UnicodeDecodeError, TypeError) as exc:  # fuzz: model_config stored as an array
        raise InputError(f"the model config is not valid JSON: {_first_line(exc)}", path) from None
    if not isinstance(config, dict):
        raise InputError("the model config is not a JSON object", path)
    return config


def unsafe_parts(config: Any) -> list[str]:
    """Lambda layers and custom (non-Keras) objects in a model config: loading them runs code."""
    found: list[str] = []
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        stack.extend(node.values())
        cls = node.get("class_name")
        if not isinstance(cls, str):
            continue
        module = node.get("module")
        if cls == "Lambda":
            found.append(f"Lambda layer {node.get('config', {}).get('name', '?')!r}")
        elif node.get("registered_name") and not str(module or "").startswith("keras"):
            found.append(f"custom object {node['registered_name']!r}")
        elif ">" in cls:  # Keras 2 configs name registered custom classes "package>Class"
            found.append(f"custom object {cls!r}")
    return sorted(set(found))


def _refuse_untrusted(config: dict, trust_code: bool, path: Path) -> None:
    parts = unsafe_parts(config)
    if parts and not trust_code:
        shown = ", ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "")
        raise InputError(f"the model contains {shown}; refusing to run code from the file", path, TRUST_HINT)


# --- loading (tensorflow) -----------------------------------------------------------------

def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # as hub.child does for onnx2tf; before TF loads
    import logging

    for name in ("tensorflow", "tf2onnx", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _load_keras(path: Path, kind: str, trust_code: bool) -> Any:
    """Keras 3 first; legacy Keras 2 `.h5` files that Keras 3 refuses load with tf_keras."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trust_code)
    except Exception as exc:  # Keras raises TypeError/ValueError/KeyError for configs it cannot rebuild
        first = exc
    if kind == "h5":
        import tf_keras

        try:
            return tf_keras.models.load_model(path, compile=False, safe_mode=not trust_code)
        except Exception as exc:
            raise InputError(f"neither Keras 3 nor tf_keras can load this .h5: Keras 3: {_first_line(first)}; "
                             f"tf_keras: {_first_line(exc)}", path, _custom_hint(exc)) from None
    raise InputError(f"Keras cannot load this model: {_first_line(first)}", path, _custom_hint(first)) from None


def _custom_hint(exc: BaseException) -> str | None:
    text = str(exc)
    if "Unknown layer" in text or "Could not locate" in text or "custom" in text.lower():
        return "the model uses a custom class whose code is not importable here"
    return None


def _keras_function(model: Any) -> tuple[Callable, list[tuple[str, list | None, Any]]]:
    """A traceable function of a Keras model ({output layer name: tensor}) and its inputs (name, shape, dtype)."""
    import tensorflow as tf

    inputs = [(_tf_name(t.name, f"input_{i}"), list(t.shape), tf.as_dtype(t.dtype)) for i, t in enumerate(model.inputs)]
    outputs = _unique([_tf_name(n, f"output_{i}") for i, n in enumerate(_output_names(model))])

    def fn(*args: Any) -> dict:
        result = model(list(args) if len(args) > 1 else args[0], training=False)
        flat = tf.nest.flatten(result)
        return dict(zip(outputs, flat))

    return fn, inputs


def _output_names(model: Any) -> list[str]:
    """The layers producing the outputs ("probs"), not Keras 3's internal tensor names."""
    names = []
    for i, tensor in enumerate(model.outputs):
        history = getattr(tensor, "_keras_history", None)
        layer = history[0] if history else None
        names.append(getattr(layer, "name", None) or getattr(tensor, "name", None) or f"output_{i}")
    return names


def _savedmodel_function(path: Path) -> tuple[Callable, list[tuple[str, list | None, Any]]]:
    """The serving signature of a SavedModel (graph only: loading runs no Python from the folder)."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        raise InputError(f"cannot load the SavedModel, it looks corrupt or incomplete: {_first_line(exc)}",
                         path) from None
    signatures = dict(loaded.signatures)
    if "serving_default" in signatures:
        signature = signatures["serving_default"]
    elif len(signatures) == 1:
        signature = next(iter(signatures.values()))
    else:
        listed = ", ".join(sorted(signatures)) or "none"
        raise InputError(f"the SavedModel has no serving_default signature (signatures: {listed})", path,
                         "export it with model.export(path) or tf.saved_model.save(..., signatures=...)")
    _, kwargs = signature.structured_input_signature
    names = sorted(kwargs)
    inputs = [(n, kwargs[n].shape.as_list() if kwargs[n].shape.rank is not None else None, kwargs[n].dtype)
              for n in names]
    outputs = sorted(signature.structured_outputs)

    def fn(*args: Any) -> dict:
        result = signature(**dict(zip(names, args)))
        return {k: result[k] for k in outputs}

    fn.keep_alive = loaded  # the signature's variables die with the loaded object
    return fn, inputs


# --- shapes and export ----------------------------------------------------------------------

def _static_specs(inputs: list[tuple[str, list | None, Any]], options: LoadOptions, path: Path) -> list:
    """Fixed-shape TensorSpecs: --input-shape where given, else batch `options.batch`."""
    import tensorflow as tf

    names = [n for n, _, _ in inputs]
    unknown = [n for n in options.input_shapes if n is not None and n not in names]
    if unknown:
        raise InputError(f"--input-shape names {unknown[0]!r}, but the model's inputs are {', '.join(names)}", path)
    if None in options.input_shapes and len(names) > 1:
        raise InputError(f"the model has {len(names)} inputs ({', '.join(names)}): give --input-shape NAME=D0,D1,...",
                         path)
    specs = []
    for i, (name, shape, dtype) in enumerate(inputs):
        given = options.input_shapes.get(name) or (options.input_shapes.get(None) if i == 0 else None)
        if given is not None:
            fixed = _fit_given(name, shape, tuple(given), path)
        else:
            fixed = _default_shape(name, shape, options.batch, path)
        specs.append(tf.TensorSpec(fixed, dtype, name=name))
    return specs


def _fit_given(name: str, shape: list | None, given: tuple[int, ...], path: Path) -> list[int]:
    """Accept --input-shape in the model's own layout (NHWC) or, for images, in the exported NCHW one."""
    if shape is None or _fits(shape, given):
        return list(given)
    if len(shape) == 4 and len(given) == 4:
        nhwc = (given[0], given[2], given[3], given[1])
        if _fits(shape, nhwc):
            return list(nhwc)
    shown = ",".join("?" if d is None else str(d) for d in shape)
    raise InputError(f"--input-shape {name}={','.join(map(str, given))} does not fit the model's input "
                     f"({shown}, Keras layout)", path)


def _fits(shape: list, given: tuple[int, ...]) -> bool:
    return len(shape) == len(given) and all(d is None or d == g for d, g in zip(shape, given))


def _default_shape(name: str, shape: list | None, batch: int, path: Path) -> list[int]:
    if shape is None:
        raise InputError(f"input {name!r} has no known rank: pass --input-shape {name}=D0,D1,...", path)
    fixed = list(shape)
    if fixed and fixed[0] is None:
        fixed[0] = batch  # microcontrollers run one sample at a time
    if any(d is None for d in fixed):
        shown = ",".join("?" if d is None else str(d) for d in fixed)
        raise InputError(f"input {name!r} has dynamic dimensions ({shown}): pass --input-shape {name}=D0,D1,... "
                         "(Keras layout, e.g. 1,32,32,3)", path)
    return fixed


def _is_image(spec: Any) -> bool:
    return spec.shape.rank == 4 and spec.dtype.is_floating


def _to_onnx(fn: Callable, specs: list, path: Path) -> Any:
    import tensorflow as tf
    import tf2onnx

    nchw = [s.name for s in specs if _is_image(s)]
    function = tf.function(fn)
    with _exportable_keras_ops():
        try:
            model, _ = tf2onnx.convert.from_function(function, input_signature=specs, opset=OPSET,
                                                     inputs_as_nchw=nchw or None,
                                                     custom_op_handlers={"Erfc": (_erfc_as_erf, [])})
        except Exception as exc:  # tf2onnx raises bare ValueError/RuntimeError for ops it cannot map
            raise IncompatibleError(f"tf2onnx cannot convert this model to ONNX: {_first_line(exc)}", path) from None
        _captures_to_initializers(model, function.get_concrete_function(*specs))
    _refuse_tensorflow_ops(model, path)
    model.producer_name = "hub (tf2onnx)"
    return model


@contextmanager
def _exportable_keras_ops() -> Iterator[None]:
    """Trace three Keras 3 ops as TensorFlow ops tf2onnx 1.17 translates, while exporting (ConvNeXt has two).

    - Grouped Conv2D (groups > 1): Keras' TensorFlow backend wraps it in `tf.function(jit_compile=True)`
      because TensorFlow's CPU kernel cannot run it (keras/src/backend/tensorflow/nn.py, `conv`), and tf2onnx
      keeps that XLA call as an untranslated StatefulPartitionedCall (36 in Keras ConvNeXtTiny). The Conv2D op
      itself takes a kernel with fewer input channels than the input (its shape function allows groups), and
      tf2onnx's handler writes an ONNX Conv with `group` (tf2onnx/onnx_opset/nn.py, conv_convert_inputs).
    - Exact GELU: tf.nn.gelu(x, approximate=False) is 0.5 * x * erfc(-x / sqrt 2) and tf2onnx has no Erfc;
      0.5 * x * (1 + erf(x / sqrt 2)) is the same function, with the Erf torch's exporters write, which hub's
      gelu_tanh rule turns into TFLM's int8 MUL/ADD/TANH (an Erfc left elsewhere: _erfc_as_erf).
    - A 2-D addend: Keras' TensorFlow backend writes `add(x, y)` as Squeeze + BiasAdd whenever y squeezes to a
      vector (keras/src/backend/tensorflow/numpy.py, `add`); at batch 1 that is an LSTM cell's recurrent product,
      so tf2onnx's Keras LSTM pattern (tf2onnx/rewriter/rnn_utils.py, make_lstm_xc_pattern: Add(MatMul, MatMul))
      misses it, leaves a Loop (which onnxruntime refuses) and the fused LSTM kernel is lost. A plain Add.
    Only the trace changes: the Keras model the outputs are verified against still runs its own ops."""
    # why here: keras and tensorflow are imported only once a Keras model is loaded (sniffing stays light)
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn as backend_nn
    from keras.src.backend.tensorflow import numpy as backend_numpy

    original_conv, original_gelu, original_add = backend_nn.conv, backend_nn.gelu, backend_numpy.add

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        channels_last = backend_nn.backend.standardize_data_format(data_format) == "channels_last"
        if len(inputs.shape) == 4 and channels_last and inputs.shape[-1] != kernel.shape[-2]:
            return tf.nn.convolution(inputs, kernel, strides, padding.upper(), data_format="NHWC",
                                     dilations=dilation_rate)
        return original_conv(inputs, kernel, strides, padding, data_format, dilation_rate)

    def gelu(x, approximate=True):
        if approximate:
            return original_gelu(x, approximate=True)
        x = tf.convert_to_tensor(x)
        return 0.5 * x * (1.0 + tf.math.erf(x * tf.cast(math.sqrt(0.5), x.dtype)))

    def add(x1, x2):
        if isinstance(x1, tf.Tensor) and isinstance(x2, tf.Tensor) and x1.dtype == x2.dtype and x2.shape.rank > 1:
            return tf.add(x1, x2)
        return original_add(x1, x2)

    backend_nn.conv, backend_nn.gelu, backend_numpy.add = conv, gelu, add
    try:
        yield
    finally:
        backend_nn.conv, backend_nn.gelu, backend_numpy.add = original_conv, original_gelu, original_add


def _erfc_as_erf(ctx: Any, node: Any, name: str, args: list) -> Any:
    """tf2onnx handler for Erfc, which it has none for: erfc(z) = 1 - erf(z), ONNX Erf and Sub (both with int8
    TFLM kernels once hub's erf rules have replaced the Erf)."""
    import numpy as np
    from tf2onnx import utils

    erf = ctx.make_node("Erf", [node.input[0]], op_name_scope=name)
    one = ctx.make_const(utils.make_name(f"{name}_one"), np.array(1, utils.map_onnx_to_numpy_type(ctx.get_dtype(
        node.input[0]))))
    node.type, node.domain = "Sub", ""
    ctx.replace_inputs(node, [one.output[0], erf.output[0]])
    return node


# TensorFlow ops tf2onnx 1.17 leaves untranslated in Keras 3 models (with Erfc and grouped Conv2D handled above),
# and the layer behind each.
UNTRANSLATED = {
    "StatefulPartitionedCall": "an XLA-compiled function (Keras 3 runs some convolutions this way)",
    "PartitionedCall": "an XLA-compiled function (Keras 3 runs some convolutions this way)",
}
UNTRANSLATED_HINT = "rebuild those layers from ops TensorFlow runs without XLA (channels-last 2-D convolutions)"


def _refuse_tensorflow_ops(model: Any, path: Path) -> None:
    """tf2onnx keeps a TensorFlow op it cannot translate as a node of that name, and only logs it; such a
    graph is not ONNX, and onnx2tf fails on it later with an unrelated error (a UnicodeDecodeError on
    ConvNeXt's function attributes). Name the ops, and the Keras layers they come from, here."""
    import onnx

    counts: dict[str, int] = {}
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    if not counts:
        return
    parts = [f"{op} x{n}" + (f" ({UNTRANSLATED[op]})" if op in UNTRANSLATED else "") for op, n in sorted(counts.items())]
    hint = UNTRANSLATED_HINT if set(counts) & set(UNTRANSLATED) else None
    raise IncompatibleError(f"tf2onnx cannot translate {sum(counts.values())} TensorFlow ops to ONNX: "
                            + ", ".join(parts), path, hint)


def _captures_to_initializers(model: Any, concrete: Any) -> None:
    """Constants the traced function captures (Keras 3 Normalization's mean and variance, as in
    EfficientNet and ConvNeXt) are inputs of the concrete function, and tf2onnx makes them graph
    inputs: the model would take its normalisation constants from the caller. Put their values back."""
    import tensorflow as tf
    from onnx import numpy_helper

    captured = {inner.name: outer for outer, inner in concrete.graph.captures if outer.dtype != tf.resource}
    for value in list(model.graph.input):
        if value.name in captured:
            model.graph.input.remove(value)
            model.graph.initializer.append(numpy_helper.from_array(captured[value.name].numpy(), value.name))


# --- small helpers ----------------------------------------------------------------------------

def _tf_name(name: str, fallback: str) -> str:
    """A name TensorFlow accepts for a TensorSpec / ONNX value (Keras names may hold ':' or '/')."""
    name = re.sub(r":\d+$", "", str(name or ""))
    name = re.sub(r"[^A-Za-z0-9_.\-]", "_", name)
    return name if name and name[0].isalnum() else fallback


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n] - 1}")
    return out


def _first_line(exc: BaseException) -> str:
    """One line of an exception message; TF's "in user code:" wrappers put the cause last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return (lines[-1] if lines[0] == "in user code:" else lines[0])[:300]


if __name__ == "__main__":  # the child of _probe_hdf5
    _read_all_hdf5(sys.argv[1], sys.argv[2])
