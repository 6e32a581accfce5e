"""Mutations of model files and the contract every `hub` run on them must keep.

Shared by tests/test_fuzz.py (a fixed-seed sample in CI) and bench/fuzz_cli.py
(>= 1,000 cases by hand). Each format gets byte-level mutations (flip, truncate,
extend, splice) and structure-aware ones that keep the container valid so the
damage reaches deeper code: ONNX ModelProto fields, TFLite flatbuffer tables
(object API of the schema inside ai_edge_litert) and raw offsets, zip members
of PyTorch/Keras archives, HDF5 attributes and datasets of Keras .h5 files.
A mutation is a pure function of (format, original bytes, seed).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
HUB = [sys.executable, "-m", "hub.cli"]
FORMATS = ("onnx", "tflite", "pt", "pt2", "keras", "h5")
SUFFIX = {"onnx": ".onnx", "tflite": ".tflite", "pt": ".pt", "pt2": ".pt2", "keras": ".keras", "h5": ".h5"}
# Values that break arithmetic, allocation and indexing when they land in a size or index field.
NASTY_INTS = [0, -1, 1, 2, 3, 7, 255, 65535, 2**31 - 1, 2**31, 2**32 + 1, 2**40, 2**62]
ESCAPE_NAME = "hub_fuzz_escape.txt"  # written by no one unless an extractor honours a traversal member name
NASTY_FLOATS = [0.0, -0.0, 1e-30, -1.0, 1e30, float("inf"), float("nan")]


@dataclass
class Case:
    """One mutated model file (and its companions, e.g. external data), named by format, kind and seed."""

    fmt: str
    kind: str
    seed: int
    data: bytes
    extra: dict[str, bytes] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"case_{self.seed}{SUFFIX[self.fmt]}"

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for rel, data in self.extra.items():
            (folder / rel).write_bytes(data)
        path = folder / self.name
        path.write_bytes(self.data)
        return path


# --- byte-level ---------------------------------------------------------------------------------

def flip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 4, 16, 64])):
        i = rng.randrange(len(out))
        out[i] ^= 1 << rng.randrange(8) if rng.random() < 0.5 else rng.randrange(1, 256)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    cut = rng.choice([rng.randrange(len(data)), rng.randrange(min(len(data), 64)), len(data) - rng.randrange(1, 64)])
    return data[: max(1, cut)]


def extend(data: bytes, rng: random.Random) -> bytes:
    tail = rng.choice([bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 4096))),
                       b"\x00" * rng.randrange(1, 1 << 16), data[: rng.randrange(1, len(data))]])
    return data + tail


def splice(data: bytes, rng: random.Random) -> bytes:
    """Delete, duplicate or zero a chunk in the middle: shifts every later offset."""
    i = rng.randrange(len(data))
    n = rng.randrange(1, max(2, min(4096, len(data) - i)))
    op = rng.choice(["delete", "duplicate", "zero"])
    if op == "delete":
        return data[:i] + data[i + n:] or data[:1]
    if op == "duplicate":
        return data[:i + n] + data[i:i + n] + data[i + n:]
    return data[:i] + b"\x00" * n + data[i + n:]


BYTE_MUTATIONS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "flip": flip, "truncate": truncate, "extend": extend, "splice": splice}


# --- JSON (Keras config.json, .h5 model_config, .pt2 models/*.json, TorchScript hub.json) ------

def _json_paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _json_paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _json_paths(v, path + (i,))


def mutate_json_text(text: str, rng: random.Random) -> str:
    """Change one value, key or list of a JSON document (or break its syntax)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text[: rng.randrange(len(text) + 1)]
    if rng.random() < 0.08:
        return text[: rng.randrange(len(text))]  # not JSON any more
    paths = [p for p in _json_paths(doc) if p]
    if not paths:
        return json.dumps(rng.choice([None, [], 0, "x"]))
    # Prefer the fields that steer loading: class names, shapes, sizes.
    keyed = [p for p in paths if p[-1] in ("class_name", "batch_input_shape", "batch_shape", "shape", "units",
                                           "filters", "kernel_size", "strides", "dtype", "module", "inbound_nodes",
                                           "input_shapes", "registered_name", "activation", "axis", "data_format")]
    path = rng.choice(keyed) if keyed and rng.random() < 0.6 else rng.choice(paths)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key, value = path[-1], parent[path[-1]]
    strings = [s for p in paths for s in [_get(doc, p)] if isinstance(s, str)]
    choice = rng.randrange(6)
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
    elif choice == 1 and isinstance(parent, list):
        parent.insert(key, copy.deepcopy(value)) if rng.random() < 0.5 else parent.pop(key)
    elif isinstance(value, bool) or value is None:
        parent[key] = rng.choice([True, False, None, 0, "true", []])
    elif isinstance(value, (int, float)):
        parent[key] = rng.choice(NASTY_INTS + [-(2**31), 0.5, 1e308, -7])
    elif isinstance(value, str):
        parent[key] = rng.choice(["", "Lambda", "NoSuchLayer", "channels_first", "int64", "string", "x" * 1000,
                                  "../../etc/passwd", *(strings[:50] or ["y"])])
    elif isinstance(value, list) and value:
        parent[key] = rng.choice([[], value[:-1], value + value[-1:], [None] * len(value),
                                  [rng.choice(NASTY_INTS) for _ in value]])
    else:
        parent[key] = rng.choice([None, [], {}, 0, "x"])
    return json.dumps(doc)


def _get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


# --- ONNX ModelProto fields -----------------------------------------------------------------------

ONNX_OPS = ["Conv", "Relu", "Gemm", "MatMul", "Add", "Loop", "If", "Scan", "Sign", "Softmax", "Resize", "Reshape",
            "NonMaxSuppression", "Einsum", "Identity", "Constant", "Split", "Concat", "FooBar", "", "LSTM", "TopK"]


def mutate_onnx(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    import onnx

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception:
        return None
    g = model.graph
    kind = rng.choice(["dims", "dtype", "op_type", "attr", "drop_node", "rename_edge", "opset", "raw_data",
                       "drop_input", "external", "output"])
    if kind == "dims":
        values = list(g.input) + list(g.output) + list(g.value_info)
        if values and rng.random() < 0.7:
            dims = rng.choice(values).type.tensor_type.shape.dim
            if len(dims) and rng.random() < 0.8:
                d = dims[rng.randrange(len(dims))]
                if rng.random() < 0.25:
                    d.dim_param = rng.choice(["N", "height", ""])
                else:
                    d.dim_value = rng.choice(NASTY_INTS[:10] + [-(2**31)]) % (2**63)
                    if rng.random() < 0.3:
                        d.dim_value = -rng.randrange(1, 5)
            elif len(dims):
                del dims[rng.randrange(len(dims))]
            else:
                dims.add().dim_value = rng.choice(NASTY_INTS[:8])
        elif g.initializer:
            t = rng.choice(g.initializer)
            t.dims[:] = [rng.choice([0, 1, 2, 3, 8, 2**20, 2**40]) for _ in range(rng.randrange(0, 5))]
    elif kind == "dtype":
        codes = list(onnx.TensorProto.DataType.values()) + [0, 99, 2**20]
        if g.input and rng.random() < 0.5:
            rng.choice(g.input).type.tensor_type.elem_type = rng.choice(codes)
        elif g.initializer:
            rng.choice(g.initializer).data_type = rng.choice(codes)
    elif kind == "op_type" and g.node:
        node = rng.choice(g.node)
        if rng.random() < 0.8:
            node.op_type = rng.choice(ONNX_OPS)
        else:
            node.domain = rng.choice(["com.microsoft", "custom.domain", "ai.onnx.ml"])
    elif kind == "attr":
        nodes = [n for n in g.node if n.attribute]
        if not nodes:
            return None
        attrs = rng.choice(nodes).attribute
        a = attrs[rng.randrange(len(attrs))]
        r = rng.random()
        if r < 0.15:
            del attrs[rng.randrange(len(attrs))]
        elif a.ints and r < 0.7:
            a.ints[:] = [rng.choice([0, -1, -5, 1000000, 2**40, 3]) for _ in range(rng.choice([len(a.ints), 1, 7]))]
        elif a.type == onnx.AttributeProto.INT or r < 0.8:
            a.i = rng.choice(NASTY_INTS[:10] + [-1, -(2**40)]) if rng.random() < 0.7 else 2**62
        elif a.type == onnx.AttributeProto.FLOAT:
            a.f = rng.choice(NASTY_FLOATS)
        else:
            a.type = rng.choice([1, 2, 3, 4, 7, 8, 99])
    elif kind == "drop_node" and g.node:
        del g.node[rng.randrange(len(g.node))]
    elif kind == "rename_edge" and g.node:
        node = rng.choice(g.node)
        edges = node.input if node.input and rng.random() < 0.6 else node.output
        if edges:
            edges[rng.randrange(len(edges))] = rng.choice(["missing", "", g.node[0].output[0] if g.node[0].output else "x"])
    elif kind == "opset":
        if model.opset_import and rng.random() < 0.7:
            model.opset_import[0].version = rng.choice([1, 6, 9, 12, 19, 22, 99, 10**6])
        else:
            model.ir_version = rng.choice([0, 1, 3, 99, 2**40])
    elif kind == "raw_data" and g.initializer:
        t = rng.choice(g.initializer)
        if t.raw_data:
            t.raw_data = t.raw_data[: rng.randrange(len(t.raw_data))] if rng.random() < 0.6 else t.raw_data * 2
        else:
            del t.float_data[:]
    elif kind == "drop_input" and g.input:
        if rng.random() < 0.6:
            del g.input[rng.randrange(len(g.input))]
        else:
            g.input.append(copy.deepcopy(g.input[0]))
    elif kind == "external" and g.initializer:
        t = rng.choice(g.initializer)
        t.data_location = onnx.TensorProto.EXTERNAL
        t.ClearField("raw_data")
        del t.external_data[:]
        for k, v in (("location", rng.choice(["missing.bin", "../escape.bin", "/etc/passwd", "", "a/../../b",
                                             "C:\\x", "data.bin"])),
                     ("offset", str(rng.choice([0, -1, 10**12]))), ("length", str(rng.choice([4, 0, -3, 10**12])))):
            entry = t.external_data.add()
            entry.key, entry.value = k, v
    elif kind == "output" and g.output:
        g.output[0].name = rng.choice(["", "nope", g.input[0].name if g.input else "x"])
    else:
        return None
    return f"onnx.{kind}", model.SerializeToString()


# --- TFLite flatbuffer ------------------------------------------------------------------------------

def mutate_tflite(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    kind = rng.choice(["tensor_type", "shape", "opcode", "op_io", "opcode_index", "buffer_index", "buffer_data",
                       "subgraph_io", "quant", "version", "drop", "offset", "offset"])
    if kind == "offset":
        return "tflite.offset", _mutate_offset(data, rng)
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    try:
        m = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception:
        return None
    sg = m.subgraphs[0] if m.subgraphs else None
    tensors = sg.tensors if sg and sg.tensors else []
    ops = sg.operators if sg and sg.operators else []
    if kind == "tensor_type" and tensors:
        rng.choice(tensors).type = rng.choice(list(range(0, 20)) + [31, 127])
    elif kind == "shape" and tensors:
        t = rng.choice(tensors)
        t.shape = rng.choice([[], [-1], [0], [2**31 - 1], [1] * 10, [1, 2**20, 2**20, 3],
                              [d + rng.choice([-1, 1]) for d in (t.shape if t.shape is not None else [1])]])
    elif kind == "opcode" and m.operatorCodes:
        c = rng.choice(m.operatorCodes)
        code = rng.choice(list(range(0, 210)) + [32, 1000, -1])
        c.builtinCode, c.deprecatedBuiltinCode = code, max(-128, min(code, 127))
        if code == 32 and rng.random() < 0.5:
            c.customCode = rng.choice([b"", b"TFLite_Detection_PostProcess", b"\xff\xfe"])
    elif kind == "op_io" and ops:
        op = rng.choice(ops)
        field_ = "inputs" if rng.random() < 0.6 else "outputs"
        values = list(getattr(op, field_) if getattr(op, field_) is not None else [])
        bad = rng.choice([-1, -2, len(tensors), len(tensors) + 100, 2**31 - 1])
        if values:
            values[rng.randrange(len(values))] = bad
        else:
            values = [bad]
        setattr(op, field_, values)
    elif kind == "opcode_index" and ops:
        rng.choice(ops).opcodeIndex = rng.choice([len(m.operatorCodes or []), 2**31 - 1, 7])
    elif kind == "buffer_index" and tensors:
        rng.choice(tensors).buffer = rng.choice([0, len(m.buffers or []), 2**31 - 1, 1])
    elif kind == "buffer_data" and m.buffers:
        full = [b for b in m.buffers if b.data is not None and len(b.data)]
        if not full:
            return None
        b = rng.choice(full)
        b.data = list(b.data)[: rng.randrange(len(b.data))] if rng.random() < 0.7 else list(b.data) * 2
    elif kind == "subgraph_io" and sg:
        which = "inputs" if rng.random() < 0.5 else "outputs"
        setattr(sg, which, rng.choice([[], [len(tensors) + 3], [-1], [0, 0]]))
    elif kind == "quant" and tensors:
        q = [t for t in tensors if t.quantization is not None] or tensors
        t = rng.choice(q)
        if t.quantization is None:
            t.quantization = schema.QuantizationParametersT()
        t.quantization.scale = rng.choice([[], [0.0], [float("nan")], [float("inf")], [1e-30], [1.0] * 1000])
        t.quantization.zeroPoint = rng.choice([[], [300], [-(2**40)], [0, 0, 0]])
        t.quantization.quantizedDimension = rng.choice([0, 3, 99, -1])
    elif kind == "version":
        m.version = rng.choice([0, 2, 99, 2**31 - 1])
    elif kind == "drop":
        if sg and rng.random() < 0.5:
            sg.operators = []
        else:
            m.subgraphs = []
    else:
        return None
    builder = flatbuffers.Builder(1024)
    try:
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    except (struct.error, OverflowError, TypeError, ValueError):
        return None  # the value does not fit its field's width: not a representable file
    return f"tflite.{kind}", bytes(builder.Output())


def _mutate_offset(data: bytes, rng: random.Random) -> bytes:
    """Overwrite one aligned 32-bit word (root/vtable/vector offsets, lengths) with a nearby or wild value."""
    out = bytearray(data)
    i = rng.randrange(0, max(1, len(out) - 4)) & ~3
    if rng.random() < 0.2:
        i = 0  # the root table offset
    (old,) = struct.unpack_from("<I", out, i)
    new = rng.choice([0, 0xFFFFFFFF, 0x7FFFFFFF, len(data), len(data) - 4, old + 4, old - 4, old ^ 0x80000000,
                      rng.randrange(len(data)), old * 2]) & 0xFFFFFFFF
    struct.pack_into("<I", out, i, new)
    return bytes(out)


# --- zip archives (PyTorch .pt/.pt2, Keras .keras) ---------------------------------------------------

def mutate_zip(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [(info.filename, z.read(info.filename)) for info in z.infolist()]
    except Exception:
        return None
    if not members:
        return None
    kind = rng.choice(["remove", "rename", "corrupt", "truncate_member", "json", "json", "traversal", "duplicate",
                       "empty_member"])
    i = rng.randrange(len(members))
    name, content = members[i]
    if kind == "remove":
        important = [j for j, (n, _) in enumerate(members) if re.search(r"(\.json|\.pkl|\.h5|/code/|version|"
                                                                          r"archive_format|weights)", n)]
        del members[rng.choice(important) if important and rng.random() < 0.7 else i]
    elif kind == "rename":
        members[i] = (rng.choice([name + "x", "other/" + name.split("/", 1)[-1], name.upper(), name.split("/")[-1]]),
                      content)
    elif kind == "corrupt" and content:
        members[i] = (name, flip(content, rng))
    elif kind == "truncate_member" and content:
        members[i] = (name, content[: rng.randrange(len(content))])
    elif kind == "json":
        texts = [j for j, (n, _) in enumerate(members) if n.endswith(".json")]
        if not texts:
            return None
        j = rng.choice(texts)
        try:
            text = members[j][1].decode("utf-8")
        except UnicodeDecodeError:
            return None
        members[j] = (members[j][0], mutate_json_text(text, rng).encode())
    elif kind == "traversal":
        # An extractor that honoured these names would write outside its folder.
        members.append((rng.choice([f"../../{ESCAPE_NAME}", f"/tmp/{ESCAPE_NAME}"]), b"escaped"))
    elif kind == "duplicate":
        members.append((name, flip(content, rng) if content else b"x"))
    elif kind == "empty_member":
        members[i] = (name, b"")
    else:
        return None
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for n, c in members:
            info = zipfile.ZipInfo(n, date_time=(2020, 1, 1, 0, 0, 0))
            with _quiet_duplicates():
                z.writestr(info, c)
    return f"zip.{kind}", out.getvalue()


class _quiet_duplicates:
    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# --- HDF5 (legacy Keras .h5) ---------------------------------------------------------------------

def mutate_h5(data: bytes, rng: random.Random) -> tuple[str, bytes] | None:
    import h5py
    import numpy as np

    kind = rng.choice(["config", "config", "config_type", "drop_attr", "weights", "layer_names"])
    with tempfile.TemporaryDirectory(prefix="hub-fuzz-h5-") as tmp:
        path = Path(tmp) / "m.h5"
        path.write_bytes(data)
        try:
            with h5py.File(path, "r+") as f:
                if kind == "config":
                    raw = f.attrs.get("model_config")
                    text = raw.decode() if isinstance(raw, bytes) else str(raw)
                    f.attrs["model_config"] = mutate_json_text(text, rng)
                elif kind == "config_type":
                    f.attrs["model_config"] = rng.choice([np.int64(5), np.zeros(3), "", "null", "[]", b"\xff\xfe"])
                elif kind == "drop_attr":
                    keys = list(f.attrs.keys())
                    if not keys:
                        return None
                    del f.attrs[rng.choice(keys)]
                elif kind in ("weights", "layer_names"):
                    datasets: list[str] = []
                    f.visit(lambda n: datasets.append(n) if isinstance(f[n], h5py.Dataset) else None)
                    if kind == "layer_names":
                        groups = [g for g in ["model_weights", *datasets] if g in f and "layer_names" in f[g].attrs]
                        if not groups:
                            return None
                        names = list(f["model_weights"].attrs["layer_names"])
                        f["model_weights"].attrs["layer_names"] = rng.choice(
                            [names[:-1], names + [b"ghost"], names[::-1], [b""]])
                    elif datasets:
                        name = rng.choice(datasets)
                        shape = f[name].shape
                        del f[name]
                        r = rng.random()
                        if r < 0.3:
                            pass  # weight missing
                        elif r < 0.7:
                            f[name] = np.zeros(tuple(max(1, d + rng.choice([-1, 1, 5])) for d in shape) or (3,),
                                               np.float32)
                        else:
                            f[name] = np.array([b"not a weight"] if rng.random() < 0.5 else np.ones(shape, np.int8))
                    else:
                        return None
        except (OSError, KeyError, ValueError, TypeError, AttributeError):
            return None
        return f"h5.{kind}", path.read_bytes()


STRUCTURED: dict[str, Callable[[bytes, random.Random], tuple[str, bytes] | None]] = {
    "onnx": mutate_onnx, "tflite": mutate_tflite, "pt": mutate_zip, "pt2": mutate_zip, "keras": mutate_zip,
    "h5": mutate_h5}


def make_case(fmt: str, original: bytes, seed: int, structured_share: float = 0.6) -> Case:
    """The case for (format, seed): a structure-aware mutation with probability `structured_share`
    (byte-level when the structure does not apply), else a byte-level one."""
    rng = random.Random(f"{fmt}:{seed}")
    if rng.random() < structured_share:
        result = STRUCTURED[fmt](original, rng)
        if result is not None and result[1] != original:
            return Case(fmt, result[0], seed, result[1])
    kind = rng.choice(sorted(BYTE_MUTATIONS))
    return Case(fmt, kind, seed, BYTE_MUTATIONS[kind](original, rng))


# --- running the CLI on a case, and the contract it must keep --------------------------------------------

TIME_BOUND_S = {"check": 180.0, "report": 240.0, "convert": 600.0}


@dataclass
class Outcome:
    command: str
    returncode: int | None  # None: did not end within the time bound
    stderr: str
    problems: list[str]  # broken promises; empty when the run kept the contract
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def hub_args(command: str, model: Path, work: Path) -> list[str]:
    if command == "convert":
        return ["convert", str(model), "--out", str(work / "out")]
    if command == "report":
        return ["report", str(model), "--targets", "tflm-int8", "--format", "json", "-o", str(work / "report.json")]
    return ["check", str(model)]


def run_case(case: Case, work: Path, command: str = "check", timeout_s: float | None = None) -> Outcome:
    """Write `case` into the empty folder `work`, run the real CLI on it, judge the run."""
    model = case.write(work)
    tmp = work / "tmp"
    tmp.mkdir()
    digest = sha256(model)
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(ROOT)}
    bound = timeout_s or TIME_BOUND_S[command]
    t0 = time.perf_counter()
    proc = subprocess.Popen([*HUB, *hub_args(command, model, work)], cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True)
    try:
        _, err = proc.communicate(timeout=bound)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        _, err = proc.communicate()
        code = None
    outcome = judge(command, code, err, work, model, digest)
    outcome.seconds = time.perf_counter() - t0
    return outcome


def judge(command: str, code: int | None, stderr: str, work: Path, model: Path, digest: str) -> Outcome:
    """The contract: exit 0/1/2 in time, no traceback, a failure is one `hub: error:` line naming the
    file, nothing half-written (no output on exit 2, no partial or temp folders), the input unchanged."""
    problems = []
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("hub: error:")]
    if code is None:
        problems.append("hang: no exit within the time bound")
    elif code not in (0, 1, 2):
        problems.append(f"exit code {code}")
    if "Traceback" in stderr:
        problems.append("traceback on stderr")
    stray = [ln for ln in lines if not ln.startswith(("hub: error:", "hub: warning:"))]
    if stray:
        problems.append(f"stray stderr line: {stray[0][:160]}")
    if code == 2 or len(errors) > 1:
        if len(errors) != 1:
            problems.append(f"{len(errors)} 'hub: error:' lines")
        elif model.name not in errors[0]:
            problems.append("error line does not name the file")
    if command == "convert" and code == 2 and (work / "out").exists():
        problems.append("output folder left after a failure")
    if command == "report" and code == 2 and (work / "report.json").exists():
        problems.append("report file left after a failure")
    leftovers = [p.name for p in work.iterdir() if ".partial" in p.name or ".old-" in p.name]
    # torch.export.load creates torch's own compile cache (torchinductor_<user>) in TMPDIR: not hub's output.
    leftovers += [f"tmp/{p.name}" for p in (work / "tmp").iterdir() if not p.name.startswith("torchinductor_")]
    if leftovers:
        problems.append(f"left behind: {', '.join(sorted(leftovers)[:3])}")
    escaped = [p for p in (Path(tempfile.gettempdir()), Path("/tmp"), work.parent, work.parent.parent)
               if (p / ESCAPE_NAME).exists()]
    if escaped:  # a zip member named ../../hub_fuzz_escape.txt or /tmp/... was extracted where it said
        problems.append(f"archive member escaped to {escaped[0]}")
    if sha256(model) != digest:
        problems.append("input file modified")
    error = errors[-1] if errors else ""
    return Outcome(command, code, error or (lines[-1] if lines else ""), problems)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fixture_bytes(fmt: str, tflite: Path | None = None) -> bytes:
    """The original file each format's cases are mutated from."""
    if fmt == "onnx":
        from tests.conftest import small_cnn_onnx

        return small_cnn_onnx().SerializeToString()
    if fmt == "tflite":
        if tflite is None:
            raise ValueError("the tflite format needs a converted .tflite path")
        return tflite.read_bytes()
    return (ROOT / "fixtures" / {"pt": "resnet_tiny.pt", "pt2": "tiny_cnn.pt2", "keras": "keras_cnn.keras",
                                 "h5": "keras_dense.h5"}[fmt]).read_bytes()


__all__ = ["Case", "FORMATS", "Outcome", "fixture_bytes", "judge", "make_case", "mutate_json_text", "run_case"]
