"""onnx2tf's per-op checks in linear time, inside the converter child.

In its strict mode (the default, which hub keeps: it is how onnx2tf picks the right layout for a Reshape,
a reduction or a broadcast), onnx2tf compares many ops' inputs with onnxruntime's values of the same tensors:
for each such op it builds a tf_keras Model from the graph's inputs to the op's inputs and runs it on its test
sample (onnx2tf 1.29 utils/common_functions.py `dummy_tf_inference`, called from 27 op modules and from
`acquisition_of_validation_data`, which every Add/Sub/Mul/Div correction calls). Each call recomputes the
whole graph before the op, so the conversion is quadratic in the op count: Keras ConvNeXtTiny's 608 ONNX nodes
spent minutes there, most of onnx2tf's time.

The same checks deep-copy a Keras tensor when an op reads one tensor twice (`x * x`, as a variance is written:
`acquisition_of_validation_data` takes the one value onnx2tf's inference returns for both operands and
`copy.deepcopy`s the second operand): that copies the tensor's whole history, every layer before it, for a value
used only for its shape (the transposes tried on it fail either way). `install` makes that copy the tensor itself
for the duration of the check. ConvNeXtTiny: half of its remaining onnx2tf time was these copies.

`install` makes every such call compute only the layers it has not computed yet for the same input sample,
keeping each Keras tensor's value: the same layers called eagerly on the same inputs as the prefix Model's own
call, in its order, so the same values. Memory: one value per Keras tensor, as onnx2tf already holds
onnxruntime's value of every ONNX tensor for the same checks.
"""
from __future__ import annotations

import hashlib
import sys
from types import ModuleType
from typing import Any

import numpy as np


class _Reused(list):
    """A tensor_dict entry of tf_keras' functional graph (Node.map_arguments pops one value per use) that
    every later call may read again."""

    def pop(self, *_args: Any) -> Any:
        return self[0]


class PrefixValues:
    """Keras tensor values of one conversion, per input sample: {digest of the inputs: {str(id(tensor)): value}}."""

    def __init__(self, tf: ModuleType) -> None:
        self._tf = tf
        self._by_sample: dict[bytes, dict[str, _Reused]] = {}
        self._nodes: list[Any] = []  # the computed nodes, kept alive: their tensors' id() keys the values

    def outputs(self, model: Any, feed: dict[str, Any]) -> list[Any]:
        """What `model(feed, training=False)` returns (as a list), computing only what no earlier call did."""
        values = self._by_sample.setdefault(_digest(feed), {})
        for tensor in model.inputs:
            values.setdefault(str(id(tensor)), _Reused([self._tf.convert_to_tensor(feed[tensor.name],
                                                                                   dtype=tensor.dtype)]))
        for node in _missing(model.outputs, values):
            args, kwargs = node.map_arguments(values)
            results = node.layer(*args, **kwargs)
            for tensor_id, value in zip(node.flat_output_ids, self._tf.nest.flatten(results)):
                values[tensor_id] = _Reused([value])
            self._nodes.append(node)
        return [values[str(id(tensor))][0] for tensor in model.outputs]


def _digest(feed: dict[str, Any]) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(feed):
        array = np.ascontiguousarray(np.asarray(feed[name]))
        h.update(f"{name}:{array.dtype}:{array.shape}".encode())
        h.update(array.tobytes())
    return h.digest()


def _producer(tensor: Any) -> Any:
    history = tensor._keras_history
    return history.layer._inbound_nodes[history.node_index]


def _missing(outputs: list[Any], values: dict[str, Any]) -> list[Any]:
    """The nodes that compute `outputs` and are not computed yet, each after the nodes it reads."""
    order: list[Any] = []
    seen: set[int] = set()
    stack = [(_producer(t), False) for t in outputs]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in seen or all(i in values for i in node.flat_output_ids):
            continue
        if node.is_input:
            raise KeyError(f"input {node.layer.name} was not fed")
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((_producer(t), False) for t in node.keras_inputs)
    return order


class _Prefix:
    """Stands in for the prefix Model onnx2tf passes to dummy_tf_inference: its call and its `outputs`."""

    def __init__(self, model: Any, values: PrefixValues) -> None:
        self._model, self._values = model, values
        self.inputs, self.outputs = model.inputs, model.outputs

    def __call__(self, inputs: dict[str, Any], training: bool = False) -> Any:
        try:
            return self._values.outputs(self._model, inputs)
        except Exception:  # noqa: BLE001 - a graph this walk does not know: onnx2tf's own call, same values
            return self._model(inputs=inputs, training=training)


def install(common_functions: ModuleType, tf: ModuleType, keras_tensor: type) -> None:
    """Route every onnx2tf module's `dummy_tf_inference` through one PrefixValues, and make `keras_tensor`
    (tf_keras' KerasTensor) deep-copy as itself inside `acquisition_of_validation_data`."""
    values = PrefixValues(tf)

    def with_values(original: Any) -> Any:
        def dummy_tf_inference(*, model: Any, **kwargs: Any) -> Any:
            return original(model=_Prefix(model, values) if model is not None else None, **kwargs)
        return dummy_tf_inference

    def without_history_copies(original: Any) -> Any:
        def acquisition_of_validation_data(**kwargs: Any) -> Any:
            keras_tensor.__deepcopy__ = lambda self, memo: self
            try:
                return original(**kwargs)
            finally:
                del keras_tensor.__deepcopy__
        return acquisition_of_validation_data

    _replace(common_functions, "dummy_tf_inference", with_values)
    _replace(common_functions, "acquisition_of_validation_data", without_history_copies)


def _replace(common_functions: ModuleType, name: str, wrap: Any) -> None:
    """`common_functions.NAME` wrapped. Op modules import it by name when onnx2tf first converts such an op, so
    the ones loaded later take the wrapped function from `common_functions`; the ones loaded already are rebound."""
    original = getattr(common_functions, name)
    wrapped = wrap(original)
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("onnx2tf") and getattr(module, name, None) is original:
            setattr(module, name, wrapped)
