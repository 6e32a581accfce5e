"""Unroll ONNX GRU, LSTM and RNN over their static sequence length into builtins TFLM runs.

TFLM has no GRU kernel and no RNN kernel; onnx2tf 1.29 lowers the three ONNX ops to a Keras RNN
loop that the TFLite converter turns into a WHILE over a custom cell (the KWS GRU and LSTM
fixtures crash the converter child with SIGSEGV). onnx2tf's `-eru` unrolls inside Keras instead,
but copies the weights into every step (a 64-unit KWS GRU: 257 KB, 977 ops, 236 KB arena).
Unrolled here, in the ONNX graph, each direction becomes

    P       = Gemm(X as [seq * batch, input], W^T, input biases)   one FULLY_CONNECTED for all steps
    P_t     = Split(P, seq)[t]                                      one SPLIT
    per step t (h, c: the state; the weights R are one constant shared by every step):
      GRU   zr = Sigmoid(P_t[zr] + h R_zr^T);  z, r = Split(zr)
            n  = Tanh(P_t[n] + r * (h R_n^T + Rb_n))               (linear_before_reset=1, torch's)
            n  = Tanh(P_t[n] + (r * h) R_n^T + Rb_n)               (linear_before_reset=0)
            h  = n + z * (h - n)                                   = (1 - z) * n + z * h
      LSTM  a  = P_t + h R^T   (gates reordered to i, f, o | c);  ifo, g = Split(a)
            i, f, o = Split(Sigmoid(ifo));  c = f * c + i * Tanh(g);  h = o * Tanh(c)
      RNN   h  = Tanh(P_t + h R^T)

The gate maths stays in the float form of the definition (FULLY_CONNECTED, ADD, MUL, SUB,
LOGISTIC, TANH, SPLIT: all with int8 and int16 kernels in TFLM), so each step's tensors get
their own calibrated scales. The outputs: Y_h (and Y_c) are the last states, Y the steps
concatenated (CONCATENATION in groups of at most 10 inputs, TFLM's limit). A consumer that
only picks one time step out of Y (torch's `y[:, -1]` is Squeeze -> Transpose -> Gather)
reads that step's state instead, so Y is not built at all.

LSTMs the fused kernel computes are not unrolled: hub.graph.rules.fuse_lstm keeps them whole for
TFLM's UNIDIRECTIONAL_SEQUENCE_LSTM; this rule is their fallback (peepholes, clip, a used Y_c, initial
states that are not zero, ...). Handled: directions forward, reverse and bidirectional; layouts 0 and 1; initial states
given or absent (zeros), constant or computed; default activations only; LSTM peepholes and
clip (gate by gate). Left as they are (onnx2tf's lowering, which TFLM cannot run): GRU/RNN clip,
other activations, input_forget, sequence_lens that differ from the static length, a dynamic shape.
Exact up to float rounding (unit tests: 1e-5 against onnxruntime).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hub.artifacts import Rewrite
from hub.graph.edit import attr, constant, consumers, graph_output_names, opset, producer, static_shape
from hub.graph.rules import fuse_lstm

UNBLOCKS = ("LSTM", "GRU", "RNN")  # the ops hub check names this rule for
DOES = "unrolls it over its static length into builtins"

GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}
DEFAULT_ACTIVATIONS = {"GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"], "RNN": ["Tanh"]}
CONCAT_MAX = 10  # TFLM's CONCATENATION takes at most 10 inputs
SPLIT_MARK = "/hub_one_split"  # a Split's name ends so: the converter child writes it as one op (hub.convert.split)


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Rewrite]]:
    rewrites = []
    for node in [n for n in model.graph.node if n.op_type in GATES]:
        cell = _cell(model, node)
        if cell is not None:
            _unroll(model, cell)
            rewrites.append(Rewrite(node=node.name, op=node.op_type, into=f"unrolled over {cell.seq} steps",
                                    path="unrolled"))
    return model, rewrites


@dataclass
class Cell:
    """One GRU/LSTM/RNN node with everything static the unrolling needs."""

    node: onnx.NodeProto
    seq: int
    batch: int
    hidden: int
    layout: int
    directions: list[str]  # "forward" / "reverse", in the order of the num_directions axis
    W: np.ndarray  # [dirs, gates * hidden, input]
    R: np.ndarray  # [dirs, gates * hidden, hidden]
    B: np.ndarray  # [dirs, 2 * gates * hidden]: Wb then Rb
    linear_before_reset: int = 0
    clip: float | None = None  # LSTM: every activation's input clipped to [-clip, clip]
    P: np.ndarray | None = None  # LSTM peepholes [dirs, 3 * hidden] (i, o, f), None when absent or zero

    @property
    def op(self) -> str:
        return self.node.op_type


def _cell(model: onnx.ModelProto, node: onnx.NodeProto) -> Cell | None:
    """The node as a Cell, or None when it uses something the unrolling does not handle."""
    op, ins = node.op_type, list(node.input) + [""] * 8
    if fuse_lstm.kept(node):
        return None  # TFLM's fused kernel runs it (hub.graph.rules.fuse_lstm)
    shape = static_shape(model, ins[0])
    W, R = constant(model, ins[1]), constant(model, ins[2])
    hidden = int(attr(node, "hidden_size", 0) or 0)
    if shape is None or len(shape) != 3 or W is None or R is None or hidden <= 0 or W.dtype != np.float32:
        return None
    layout = int(attr(node, "layout", 0))
    seq, batch = (shape[0], shape[1]) if layout == 0 else (shape[1], shape[0])
    direction = attr(node, "direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    directions = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}.get(direction)
    if directions is None or W.shape[0] != len(directions) or W.shape[1] != GATES[op] * hidden:
        return None
    activations = [a.decode() if isinstance(a, bytes) else a for a in attr(node, "activations", [])]
    if activations and activations != DEFAULT_ACTIVATIONS[op] * len(directions):
        return None
    clip = attr(node, "clip")
    if attr(node, "input_forget", 0) or (clip is not None and op != "LSTM"):
        return None
    B = constant(model, ins[3]) if ins[3] else np.zeros((len(directions), 2 * GATES[op] * hidden), np.float32)
    if B is None or not _full_length(model, ins[4], seq):
        return None
    P = constant(model, ins[7]) if op == "LSTM" and ins[7] else None
    if op == "LSTM" and ins[7] and P is None:
        return None  # computed peepholes
    return Cell(node, seq, batch, hidden, layout, directions, W, R, B.astype(np.float32),
                int(attr(node, "linear_before_reset", 0)), None if clip is None else float(clip),
                None if _is_zero(P) or P is None else P.astype(np.float32))


def _full_length(model: onnx.ModelProto, name: str, seq: int) -> bool:
    """No sequence_lens, or constant ones that all equal the static length."""
    if not name:
        return True
    lens = constant(model, name)
    return lens is not None and bool(np.all(lens == seq))


def _is_zero(value: np.ndarray | None) -> bool:
    return value is not None and not np.any(value)


# --- emitting -------------------------------------------------------------------------------

@dataclass
class Emitter:
    """Collects new nodes and initializers under names that are fresh in the graph."""

    model: onnx.ModelProto
    base: str
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        graph = self.model.graph
        self.taken = {t.name for t in graph.initializer} | {v.name for v in graph.input}
        self.taken |= {o for n in graph.node for o in n.output}

    def name(self, key: str) -> str:
        name, k = f"{self.base}_{key}", 0
        while name in self.taken:
            k += 1
            name = f"{self.base}_{key}_{k}"
        self.taken.add(name)
        return name

    def const(self, key: str, value: np.ndarray) -> str:
        name = self.name(key)
        self.model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op: str, inputs: list[str], key: str, out: str | None = None, outputs: int = 1, **attrs) -> list[str]:
        names = [out] if out else [self.name(key if outputs == 1 else f"{key}{i}") for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=f"{names[0]}/{op}", **attrs))
        return names

    def one(self, op: str, inputs: list[str], key: str, out: str | None = None, **attrs) -> str:
        return self.op(op, inputs, key, out, **attrs)[0]

    def split(self, x: str, sizes: list[int], axis: int, key: str) -> list[str]:
        """A Split the converter child writes as one SPLIT (hub.convert.split), not a slice per output. Equal parts
        take no sizes tensor: onnxruntime 1.23 keeps an initializer over 127 bytes (the step split's, from 16
        steps on) as external data in memory, and its Split shape inference, rerun once its level-2 optimisers
        fuse something upstream (a Conv1d + ReLU front end), cannot read that ("Cannot parse data from external
        tensors")."""
        if len(set(sizes)) == 1:
            equal = {"num_outputs": len(sizes)} if opset(self.model) >= 18 else {}
            outputs = self.op("Split", [x], key, outputs=len(sizes), axis=axis, **equal)
        else:
            outputs = self.op("Split", [x, self.const(f"{key}_sizes", np.array(sizes, np.int64))], key,
                              outputs=len(sizes), axis=axis)
        self.nodes[-1].name = outputs[0] + SPLIT_MARK
        return outputs

    def gemm(self, x: str, weight: np.ndarray, bias: np.ndarray | None, key: str, out: str | None = None) -> str:
        """x @ weight^T (+ bias): FULLY_CONNECTED after onnx2tf. `weight` is [out, in]."""
        inputs = [x, self.const(f"{key}_W", weight.astype(np.float32))]
        if bias is not None and np.any(bias):
            inputs.append(self.const(f"{key}_B", bias.astype(np.float32)))
        return self.one("Gemm", inputs, key, out, transB=1)

    def reshape(self, x: str, shape: tuple[int, ...], key: str, out: str | None = None) -> str:
        return self.one("Reshape", [x, self.const(f"{key}_shape", np.array(shape, np.int64))], key, out)

    def concat(self, parts: list[str], axis: int, key: str, out: str | None = None) -> str:
        """Concat in groups of at most CONCAT_MAX inputs (then the groups' results, and so on)."""
        level = 0
        while len(parts) > CONCAT_MAX:
            parts = [self.one("Concat", parts[i:i + CONCAT_MAX], f"{key}_l{level}_{i}", axis=axis)
                     for i in range(0, len(parts), CONCAT_MAX)]
            level += 1
        if len(parts) == 1 and out is None:
            return parts[0]
        return self.one("Concat", parts, key, out, axis=axis) if len(parts) > 1 else self.one("Identity", parts, key, out)


def _unroll(model: onnx.ModelProto, cell: Cell) -> None:
    node = cell.node
    outs = list(node.output) + ["", ""]
    em = Emitter(model, node.name or outs[0] or cell.op)
    picks, dead = _time_picks(model, cell, outs[0])
    x2d, bypassed = _input_rows(em, model, cell)
    if bypassed is not None and len(consumers(model, bypassed.output[0])) == 1 \
            and bypassed.output[0] not in graph_output_names(model):
        dead.append(bypassed)
    ins = list(node.input) + [""] * 8
    last_h, last_c, steps = [], [], []
    for d, direction in enumerate(cell.directions):
        h = _initial_state(em, model, cell, ins[5], d, "h0")
        c = _initial_state(em, model, cell, ins[6], d, "c0") if cell.op == "LSTM" else None
        order = range(cell.seq) if direction == "forward" else reversed(range(cell.seq))
        projected = _project(em, cell, d, x2d)
        hs: dict[int, str] = {}
        for t in order:
            h, c = _step(em, cell, d, projected[t], h, c, f"d{d}t{t}", picks.get((d, t)))
            hs[t] = h
        steps.append([hs[t] for t in range(cell.seq)])
        last_h.append(h)
        last_c.append(c)
    graph_outputs = graph_output_names(model)
    live = [bool(name) and (name in graph_outputs or any(n not in dead for n in consumers(model, name)))
            for name in outs[:3]]
    if live[0]:
        _sequence_output(em, cell, steps, outs[0])
    if live[1]:
        _state_output(em, cell, last_h, "Y_h", outs[1])
    if len(outs) > 2 and live[2] and cell.op == "LSTM":
        _state_output(em, cell, last_c, "Y_c", outs[2])
    graph = model.graph
    for old in dead:
        graph.node.remove(old)
    at = list(graph.node).index(node)
    graph.node.remove(node)
    for offset, new in enumerate(em.nodes):
        graph.node.insert(at + offset, new)


def _input_rows(em: Emitter, model: onnx.ModelProto, cell: Cell) -> tuple[str, onnx.NodeProto | None]:
    """X as [seq * batch, input], rows in time order (batch inside each step); and the Transpose
    it reads around, if any (torch's batch_first Transpose: with batch 1 the rows are already in time order)."""
    x, bypassed = cell.node.input[0], None
    source = producer(model, x)
    if cell.layout == 0 and cell.batch == 1 and source is not None and source.op_type == "Transpose" \
            and list(attr(source, "perm", [])) == [1, 0, 2]:
        x, bypassed = source.input[0], source
    elif cell.layout == 1 and cell.batch > 1:
        x = em.one("Transpose", [x], "x_tm", perm=[1, 0, 2])
    return em.reshape(x, (cell.seq * cell.batch, cell.W.shape[2]), "x_rows"), bypassed


def _gate_order(cell: Cell) -> np.ndarray:
    """Row order of W/R/biases: LSTM's i, o, f, c become i, f, o, c (the three sigmoids together)."""
    H, G = cell.hidden, GATES[cell.op]
    blocks = [0, 2, 1, 3] if cell.op == "LSTM" else list(range(G))
    return np.concatenate([np.arange(b * H, (b + 1) * H) for b in blocks])


def _project(em: Emitter, cell: Cell, d: int, x2d: str) -> list[list[str]]:
    """The input part of the gates for all steps at once, per step: [batch, gates * hidden]
    (GRU: [batch, 2 * hidden] for z, r and [batch, hidden] for n, each split off the rows in
    one Gemm: every Split output costs the step an op)."""
    H, G = cell.hidden, GATES[cell.op]
    rows = _gate_order(cell)
    wb, rb = cell.B[d, :G * H][rows], cell.B[d, G * H:][rows]
    bias = wb + rb
    if cell.op == "GRU":  # Rb_n stays inside r * (...) (linear_before_reset) or after R_n
        bias[2 * H:] = wb[2 * H:]
    groups = [(0, 2 * H), (2 * H, 3 * H)] if cell.op == "GRU" else [(0, G * H)]
    per_group = []
    for g, (lo, hi) in enumerate(groups):
        projected = em.gemm(x2d, cell.W[d][rows][lo:hi], bias[lo:hi], f"d{d}_xproj{g}")
        per_group.append([projected] if cell.seq == 1 else
                         em.split(projected, [cell.batch] * cell.seq, 0, f"d{d}_xstep{g}"))
    return [list(step) for step in zip(*per_group)]


def _step(em: Emitter, cell: Cell, d: int, p: list[str], h: str | None, c: str | None, key: str,
          out: str | None) -> tuple[str, str | None]:
    """One time step from the projected input `p` (per gate group) and the state: the new (h, c).
    A state of None is zero (the usual first step): its terms are left out, as a zero tensor's int16
    scale of 0 makes TFLM abort in SUB."""
    H, R = cell.hidden, cell.R[d][_gate_order(cell)]

    def plus_recurrent(x: str, weight: np.ndarray, tag: str) -> str:
        return x if h is None else em.one("Add", [x, em.gemm(h, weight, None, f"{key}_hR{tag}")], f"{key}_a{tag}")

    if cell.op == "RNN":
        return em.one("Tanh", [plus_recurrent(p[0], R, "")], f"{key}_h", out), None
    if cell.op == "LSTM" and (cell.clip is not None or cell.P is not None):
        return _lstm_step_with_peepholes_or_clip(em, cell, d, plus_recurrent(p[0], R, ""), c, key, out)
    if cell.op == "LSTM":
        ifo, g = em.split(plus_recurrent(p[0], R, ""), [3 * H, H], 1, f"{key}_ifo_g")
        i, f, o = em.split(em.one("Sigmoid", [ifo], f"{key}_sig"), [H, H, H], 1, f"{key}_ifo")
        ig = em.one("Mul", [i, em.one("Tanh", [g], f"{key}_g")], f"{key}_ig")
        c = ig if c is None else em.one("Add", [em.one("Mul", [f, c], f"{key}_fc"), ig], f"{key}_c")
        return em.one("Mul", [o, em.one("Tanh", [c], f"{key}_tc")], f"{key}_h", out), c
    p_zr, p_n = p
    rb_n = cell.B[d, 5 * H:]
    z, r = em.split(em.one("Sigmoid", [plus_recurrent(p_zr, R[:2 * H], "zr")], f"{key}_zr"), [H, H], 1, f"{key}_zr")
    if h is None:  # r * (0 R_n^T + Rb_n), or (r * 0) R_n^T + Rb_n
        recurrent = None if not np.any(rb_n) else em.const(f"{key}_rbn", rb_n[None])
        if recurrent is not None and cell.linear_before_reset:
            recurrent = em.one("Mul", [r, recurrent], f"{key}_rhn")
    elif cell.linear_before_reset:
        recurrent = em.one("Mul", [r, em.gemm(h, R[2 * H:], rb_n, f"{key}_hRn")], f"{key}_rhn")
    else:
        recurrent = em.gemm(em.one("Mul", [r, h], f"{key}_rh"), R[2 * H:], rb_n, f"{key}_rhRn")
    n = em.one("Tanh", [p_n if recurrent is None else em.one("Add", [p_n, recurrent], f"{key}_an")], f"{key}_n")
    if h is None:  # n + z * (0 - n)
        return em.one("Sub", [n, em.one("Mul", [z, n], f"{key}_zn")], f"{key}_h", out), None
    zd = em.one("Mul", [z, em.one("Sub", [h, n], f"{key}_hn")], f"{key}_zd")
    return em.one("Add", [n, zd], f"{key}_h", out), None


def _lstm_step_with_peepholes_or_clip(em: Emitter, cell: Cell, d: int, a: str, c: str | None, key: str,
                                      out: str | None) -> tuple[str, str]:
    """The LSTM step gate by gate, for what the fused form above leaves out: peepholes (P_i, P_f times the
    previous cell, P_o times the new one) and clip (each activation's input bounded to [-clip, clip])."""
    H = cell.hidden
    peep = dict(zip("iof", np.split(cell.P[d], 3))) if cell.P is not None else {}
    bound = None if cell.clip is None else (em.const(f"{key}_lo", np.array(-cell.clip, np.float32)),
                                            em.const(f"{key}_hi", np.array(cell.clip, np.float32)))

    def activate(op: str, x: str, gate: str, state: str | None) -> str:
        if gate in peep and state is not None:
            x = em.one("Add", [x, em.one("Mul", [state, em.const(f"{key}_p{gate}", peep[gate][None])],
                                         f"{key}_pc{gate}")], f"{key}_a{gate}p")
        if bound is not None:
            x = em.one("Clip", [x, *bound], f"{key}_clip{gate}")
        return em.one(op, [x], f"{key}_{gate}")

    i, f, o, g = em.split(a, [H, H, H, H], 1, f"{key}_gates")  # _gate_order: i, f, o, c
    ig = em.one("Mul", [activate("Sigmoid", i, "i", c), activate("Tanh", g, "g", None)], f"{key}_ig")
    c_new = ig if c is None else em.one("Add", [em.one("Mul", [activate("Sigmoid", f, "f", c), c], f"{key}_fc"), ig],
                                        f"{key}_c")
    h = em.one("Mul", [activate("Sigmoid", o, "o", c_new), em.one("Tanh", [c_new], f"{key}_tc")], f"{key}_h", out)
    return h, c_new


def _initial_state(em: Emitter, model: onnx.ModelProto, cell: Cell, name: str, d: int, key: str) -> str | None:
    """Direction d's initial state as [batch, hidden]: None for zeros (absent or constant), a constant, or a slice."""
    shape = (cell.batch, cell.hidden)
    if not name:
        return None
    value = constant(model, name)
    if value is not None:
        per_dir = value[d] if cell.layout == 0 else value[:, d]
        return em.const(f"d{d}_{key}", per_dir.reshape(shape).astype(np.float32)) if np.any(per_dir) else None
    axis = 0 if cell.layout == 0 else 1
    if len(cell.directions) > 1:
        name = em.split(name, [1, 1], axis, f"{key}_dirs")[d]
    return em.reshape(name, shape, f"d{d}_{key}")


def _sequence_output(em: Emitter, cell: Cell, steps: list[list[str]], out: str) -> None:
    """Y: [seq, dirs, batch, hidden] (layout 0) or [batch, seq, dirs, hidden] (layout 1)."""
    time_major = (cell.seq, 1, cell.batch, cell.hidden)
    if len(steps) == 1 and (cell.layout == 0 or cell.batch == 1):  # rows already in Y's order
        shape = time_major if cell.layout == 0 else (1, cell.seq, 1, cell.hidden)
        em.reshape(em.concat(steps[0], 0, "Y_rows"), shape, "Y", out)
        return
    per_dir = [em.reshape(em.concat(hs, 0, f"d{d}_rows"), time_major, f"d{d}_Y") for d, hs in enumerate(steps)]
    if cell.layout == 0:
        em.concat(per_dir, 1, "Y", out)
        return
    y = em.concat(per_dir, 1, "Y_tm") if len(per_dir) > 1 else per_dir[0]
    em.one("Transpose", [y], "Y", out, perm=[2, 0, 1, 3])


def _state_output(em: Emitter, cell: Cell, states: list[str], key: str, out: str) -> None:
    """Y_h / Y_c: [dirs, batch, hidden] (layout 0) or [batch, dirs, hidden] (layout 1)."""
    if len(states) == 1:
        shape = (1, cell.batch, cell.hidden) if cell.layout == 0 else (cell.batch, 1, cell.hidden)
        em.reshape(states[0], shape, key, out)
        return
    axis = 0 if cell.layout == 0 else 1
    parts = [em.reshape(s, (1, cell.batch, cell.hidden) if axis == 0 else (cell.batch, 1, cell.hidden), f"{key}_d{d}")
             for d, s in enumerate(states)]
    em.concat(parts, axis, key, out)


# --- consumers that pick one step of Y --------------------------------------------------------

def _time_picks(model: onnx.ModelProto, cell: Cell, y: str) -> tuple[dict[tuple[int, int], str], list[onnx.NodeProto]]:
    """Chains Y -> Squeeze/Transpose/Reshape... -> Gather(one time step) whose result is one
    direction's [batch, hidden] state at step t: {(direction, t): the Gather's output}, and the
    chain nodes nothing else reads (they go)."""
    picks: dict[tuple[int, int], str] = {}
    chain_nodes: list[onnx.NodeProto] = []
    if not y or len(cell.directions) != 1:
        return picks, []
    axes = ["t", "d", "b", "h"] if cell.layout == 0 else ["b", "t", "d", "h"]
    sizes = {"t": cell.seq, "d": 1, "b": cell.batch, "h": cell.hidden}
    stack = [(y, axes)]
    while stack:
        name, labels = stack.pop()
        for user in consumers(model, name):
            result = _follow(model, user, labels, sizes)
            if result is None:
                continue
            chain_nodes.append(user)
            if isinstance(result, int):
                picks[(0, result)] = user.output[0]
            else:
                stack.append((user.output[0], result))
    return picks, _unread(model, chain_nodes, set(picks.values()))


def _follow(model: onnx.ModelProto, node: onnx.NodeProto, labels: list[str], sizes: dict[str, int]):
    """The labels of `node`'s output axes (a layout-only node), the step t it picks (a Gather of one
    step leaving [batch, hidden]), or None."""
    if node.op_type == "Squeeze" and len(node.input) > 1:
        axes = constant(model, node.input[1])
        drop = {int(a) % len(labels) for a in axes.reshape(-1)} if axes is not None else set()
        if not drop or any(sizes[labels[a]] != 1 for a in drop):
            return None
        return [label for a, label in enumerate(labels) if a not in drop]
    if node.op_type == "Transpose":
        perm = attr(node, "perm", None)
        return None if perm is None else [labels[p] for p in perm]
    if node.op_type == "Gather":
        index = constant(model, node.input[1])
        axis = int(attr(node, "axis", 0)) % len(labels)
        if index is None or index.ndim != 0 or labels[axis] != "t":
            return None
        rest = [label for a, label in enumerate(labels) if a != axis]
        return int(index) % sizes["t"] if rest == ["b", "h"] else None
    return None


def _unread(model: onnx.ModelProto, chain: list[onnx.NodeProto], replaced: set[str]) -> list[onnx.NodeProto]:
    """Of the chain nodes, those whose outputs end up read by nobody once the picks are rewired."""
    graph_outputs = graph_output_names(model)
    dead: list[onnx.NodeProto] = []
    changed = True
    while changed:
        changed = False
        for node in chain:
            if node in dead:
                continue
            out = node.output[0]
            readers = [n for n in consumers(model, out) if n not in dead]
            if out in replaced or (out not in graph_outputs and not readers):
                dead.append(node)
                changed = True
    return dead
