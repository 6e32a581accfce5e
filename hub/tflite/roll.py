"""Roll an unrolled int8 recurrence (hub.graph.rules.unroll_rnn's GRU steps) back into a TFLM WHILE loop.

TFLM has no GRU kernel and TF's converter dies on any int8 WHILE GRU (SIGSEGV, measured), so hub unrolls the cell:
~11 ops per step, and TFLM's per-op and per-tensor bookkeeping then dominates the arena (136 KB for a 49-step GRU).
This pass finds the repeated steps in the converted flatbuffer and moves one of them into a WHILE body subgraph,
which TFLM runs in a loop (hub.knowledge.control_flow): its bookkeeping is paid once, not once per step.

How the steps are found, exactly in structure or not at all:
- The unrolled cell computes every step's input projection in one FULLY_CONNECTED over the sequence X (T, F) and
  SPLITs it on the time axis (hub/convert/split.py). Step t's ops are the ops whose latest split output is the t-th
  (`_steps`): the ops of step t that read only the state h_t land in step t-1's group, a rotation of the same cell.
- Consecutive groups with the same signature are rolled (`_signature`): same builtins and options in the same
  order, the same wiring (into the group, from the previous group = loop carries, from the t-th split output),
  the same int8 weights, int32 biases equal in float value. Groups that differ (step 0 with h0 = 0 folded, the last
  step with the head) stay in the main graph.
- Each body tensor is quantized with the union of its ranges over the steps it stands for. Int32 biases are
  re-derived from their float value at the new input scale. A tensor whose quantization would change but whose
  producer has a fixed or copied output scale (LOGISTIC, TANH, SPLIT, ...) stops the pass: only ops that requantize
  freely may change (their outputs are exact integers of a rescaled range, a loss of < 1 step of the widest range).
- The sequence FULLY_CONNECTED + SPLIT is replaced by GATHER(X, t) + the same FULLY_CONNECTED per step (exact: the
  op is row-wise with one output scale), in the body with t the loop counter: the loop then carries X (T*F bytes)
  instead of the projections (T*3H), which WHILE would copy three times (kernel input, output, body input).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from hub.artifacts import PassResult
from hub.graph.rewrite import describe
from hub.knowledge.control_flow import FREE_OUTPUT_SCALE, READ_ANY_SCALE, WHILE_MIN_STEPS
from hub.tflite import offline_plan  # pack: the schema object API's writer
from hub.tflite.edit import builtin, drop_unused, new_buffer, opcode_index, unpack

NAME = "roll"  # the pass's name in report.json
OP = schema.BuiltinOperator
INT8, INT32, BOOL = schema.TensorType.INT8, schema.TensorType.INT32, schema.TensorType.BOOL


class _NoRoll(Exception):
    """The graph is not a recurrence this pass rolls exactly."""


@dataclass(frozen=True)
class _Source:
    """One sequence projection: FULLY_CONNECTED over X (T, F), SPLIT on time into T (1, G) step inputs."""

    fc: int  # op index
    split: int  # op index
    x: int  # the sequence tensor (..., T, F), unit leading axes
    outputs: tuple[int, ...]  # the split outputs, by step


@dataclass(frozen=True)
class RollResult:
    steps: int  # steps run by the WHILE loop (0: nothing rolled)
    total_steps: int
    ops_before: int
    ops_after: int  # in all subgraphs


def run(tflite_bytes: bytes) -> tuple[bytes, int, str]:
    """The model with its unrolled recurrence rolled into a WHILE, if it has one: (bytes, steps rolled, detail), as
    a hub.tflite.passes pass. hub.api runs it after those passes, for TFLM only."""
    rolled, result = roll(tflite_bytes)
    if not result.steps:
        return tflite_bytes, 0, ""
    return rolled, result.steps, (f"{result.steps} of {result.total_steps} recurrent steps rolled into a WHILE loop "
                                  f"({result.ops_before} -> {result.ops_after} ops)")


def as_pass(tflite_bytes: bytes) -> tuple[bytes, PassResult]:
    """`run` with its result as report.json's `passes` entry."""
    rolled, steps, detail = run(tflite_bytes)
    return rolled, PassResult(name=NAME, changed=steps, detail=detail)


def rolled_paths(graph_passes: list[PassResult], tflite_passes: list[PassResult]) -> list[PassResult]:
    """The graph's passes with the unrolled recurrent node this pass rolled marked path="rolled" (the report's
    rewrites line then says which path the GRU took)."""
    done = next((p for p in tflite_passes if p.name == NAME and p.changed), None)
    if done is None:
        return graph_passes
    total = done.detail.split(" of ", 1)[1].split(" ", 1)[0]
    marked, pending = [], True
    for result in graph_passes:
        rewrites = list(result.rewrites)
        hit = next((n for n, r in enumerate(rewrites) if r.path == "unrolled" and r.into.endswith(f" {total} steps")),
                   None)
        if pending and hit is not None:  # one recurrence is rolled per model
            rewrites[hit] = replace(rewrites[hit], path="rolled",
                                    into=f"{rewrites[hit].into}, {done.changed} rolled into a WHILE loop")
            result, pending = replace(result, rewrites=rewrites, detail=describe(rewrites)), False
        marked.append(result)
    return marked


def roll(tflite_bytes: bytes) -> tuple[bytes, RollResult]:
    if not _may_roll(tflite_bytes):
        count = schema.Model.GetRootAs(tflite_bytes, 0).Subgraphs(0).OperatorsLength()
        return tflite_bytes, RollResult(0, 0, count, count)
    model = unpack(tflite_bytes)
    ops_before = len(model.subgraphs[0].operators)
    if any(m.name == offline_plan.METADATA_NAME.encode() for m in model.metadata or []):
        return tflite_bytes, RollResult(0, 0, ops_before, ops_before)
    try:
        job = _Roll(model)
        job.apply()
    except _NoRoll:
        return tflite_bytes, RollResult(0, 0, ops_before, ops_before)
    return (offline_plan.pack(model, len(tflite_bytes)),
            RollResult(job.last - job.first + 1, job.total, ops_before, sum(len(s.operators) for s in model.subgraphs)))


def _may_roll(tflite_bytes: bytes) -> bool:
    """A SPLIT into WHILE_MIN_STEPS+ pieces in a one-subgraph model, read without unpacking (a large CNN's object
    tree costs seconds)."""
    model = schema.Model.GetRootAs(tflite_bytes, 0)
    if model.SubgraphsLength() != 1:
        return False
    codes = [max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode())
             for i in range(model.OperatorCodesLength())]
    sg = model.Subgraphs(0)
    return any(codes[sg.Operators(i).OpcodeIndex()] == OP.SPLIT and sg.Operators(i).OutputsLength() >= WHILE_MIN_STEPS
               for i in range(sg.OperatorsLength()))


class _Roll:
    """One roll: the recurrence found in `model`'s main subgraph, then the model rewritten in place."""

    def __init__(self, model: schema.ModelT):
        self.model, self.sg = model, model.subgraphs[0]
        self.ops = self.sg.operators
        self.producer = {int(t): i for i, op in enumerate(self.ops) for t in op.outputs}
        self.readers: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                self.readers.setdefault(int(t), []).append(i)
        self.sources = _sources(self)
        self.total = len(self.sources[0].outputs)
        self.groups = _steps(self)
        signatures = [_signature(self, t) for t in range(self.total)]
        self.first, self.last = _longest_run(signatures)
        self.body_sig = signatures[self.first + 1]  # carries as positions in the previous rolled step
        if any(entry[0] == "outside" for op in self.body_sig for entry in op[3]):
            raise _NoRoll  # an activation of the main graph read by every step: not passed into the loop (yet)
        self.initial = self._initial()
        self._check_escapes()

    # --- what is rolled -------------------------------------------------------------------------------
    def _check_escapes(self) -> None:
        """Every tensor of a rolled step is read in its step or by the next one's carries, never further on."""
        outputs = {int(t) for t in self.sg.outputs}
        for t in range(self.first, self.last + 1):
            allowed = set(self.groups[t]) | set(self.groups[t + 1] if t + 1 < self.total else [])
            for i in self.groups[t]:
                for out in self.ops[i].outputs:
                    if int(out) in outputs or not set(self.readers.get(int(out), [])) <= allowed:
                        raise _NoRoll
        after = self.groups[self.last + 1] if self.last + 1 < self.total else []
        carried = {(p, k) for p, k in self.carries()}
        for j in after:
            for t in self.ops[j].inputs:
                i = self.producer.get(int(t))
                if i in self.groups[self.last] and (self.groups[self.last].index(i),
                                                    list(self.ops[i].outputs).index(t)) not in carried:
                    raise _NoRoll

    def _initial(self) -> dict[tuple[int, int], int]:
        """Each carry's value entering the loop: what the first rolled step reads where the body reads the carry."""
        found: dict[tuple[int, int], int] = {}
        for p, i in enumerate(self.groups[self.first]):
            for t, entry in zip(self.ops[i].inputs, self.body_sig[p][3]):
                if entry[0] == "carry" and found.setdefault((entry[1], entry[2]), int(t)) != int(t):
                    raise _NoRoll  # one carry, two initial values
        if any(self.producer.get(t) is None for t in found.values()):
            raise _NoRoll
        return found

    def carries(self) -> list[tuple[int, int]]:
        """(position in the step, output index) of the step's tensors the next step reads, in a fixed order."""
        return sorted({(entry[1], entry[2]) for op in self.body_sig for entry in op[3] if entry[0] == "carry"})

    # --- the rewrite ----------------------------------------------------------------------------------
    def apply(self) -> None:
        rolled = [i for t in range(self.first, self.last + 1) for i in self.groups[t]]
        quant = self._body_quantization()
        body, cond = len(self.model.subgraphs), len(self.model.subgraphs) + 1
        carries = self.carries()
        initial = [self.initial[pk] for pk in carries]
        for (p, k), tensor in zip(carries, initial):
            self._requantize(tensor, quant[(p, k)])
        invariant = sorted({s.x for s in self.sources})
        loop_inputs = [self._const_int32(np.array([self.first], np.int32), b"while/first_step"), *initial, *invariant]
        loop_outputs = [self._tensor_like(t, b"while/out", quant.get(pk)) for t, pk in
                        zip(loop_inputs, [None, *carries, *[None] * len(invariant)])]
        # the next step reads the loop's carries out
        finals = {int(self.ops[self.groups[self.last][p]].outputs[k]): loop_outputs[1 + n]
                  for n, (p, k) in enumerate(carries)}
        self.model.subgraphs.append(self._body(carries, invariant, quant, loop_inputs))
        self.model.subgraphs.append(self._cond(loop_inputs))
        main = [op for i, op in enumerate(self.ops) if i not in set(rolled) and not self._is_source(i)]
        for op in main:
            op.inputs = np.array([finals.get(int(t), int(t)) for t in op.inputs], dtype=np.int32)
        main = self._step_inputs(main)
        main.append(self._op(OP.WHILE, loop_inputs, loop_outputs, schema.BuiltinOptions.WhileOptions,
                             _while_options(cond, body)))
        self.sg.operators = _topological(main, {int(t) for t in self.sg.inputs} | self._constants())
        drop_unused(self.model)

    def _is_source(self, i: int) -> bool:
        return any(i in (s.fc, s.split) for s in self.sources)

    def _step_inputs(self, main: list) -> list:
        """Outside the loop, each step input still read becomes GATHER(X, t) + the source's FULLY_CONNECTED."""
        read = {int(t) for op in main for t in op.inputs}
        extra = []
        for source in self.sources:
            for t, out in enumerate(source.outputs):
                if out in read:
                    index = self._const_int32(np.array([t], np.int32), b"step_index")
                    extra += self._project(source, source.x, index, out, self.sg)
        return extra + main

    def _project(self, source: _Source, x: int, index: int, out: int, sg) -> list:
        """GATHER(x, index) then a copy of the source's FULLY_CONNECTED writing `out`, all in subgraph `sg`."""
        x_tensor = sg.tensors[x]
        if not _same_quant(self.sg.tensors[int(self.ops[source.fc].outputs[0])].quantization,
                           self.sg.tensors[out].quantization if sg is self.sg else sg.tensors[out].quantization):
            raise _NoRoll
        shape = [1] * (len(x_tensor.shape) - 1) + [int(x_tensor.shape[-1])]
        row = _new_tensor(sg, x_tensor, b"/step", shape=shape)
        gather = self._op(OP.GATHER, [x, index], [row], schema.BuiltinOptions.GatherOptions,
                          _gather_options(len(x_tensor.shape) - 2))
        fc = copy.deepcopy(self.ops[source.fc])
        fc.inputs = np.array([row, *[self._in_subgraph(int(t), sg) for t in fc.inputs[1:]]], dtype=np.int32)
        fc.outputs = np.array([out], dtype=np.int32)
        return [gather, fc]

    def _in_subgraph(self, tensor: int, sg) -> int:
        """A main-graph constant as a tensor of `sg` (the same buffer: no copy of the data)."""
        return tensor if sg is self.sg or tensor < 0 else _new_tensor(sg, self.sg.tensors[tensor], b"")

    # --- the body and cond subgraphs ------------------------------------------------------------------
    def _body(self, carries, invariant, quant, loop_inputs) -> schema.SubGraphT:
        sg = schema.SubGraphT()
        sg.name, sg.tensors, sg.operators = b"while_body", [], []
        counter = _new_tensor(sg, self.sg.tensors[loop_inputs[0]], b"step", keep_buffer=False)
        carry_in = {pk: _new_tensor(sg, self.sg.tensors[t], b"/carry", quant[pk])
                    for pk, t in zip(carries, loop_inputs[1:])}
        x_in = {x: _new_tensor(sg, self.sg.tensors[x], b"") for x in invariant}
        group = self.groups[self.first]
        step_inputs, ops = {}, []
        for source in self.sources:  # the step's inputs, read at the loop counter
            out = source.outputs[self.first]
            if any(out in self.ops[i].inputs for i in group):
                step_inputs[out] = _new_tensor(sg, self.sg.tensors[out], b"")
                ops += self._project(source, x_in[source.x], counter, step_inputs[out], sg)
        local: dict[tuple[int, int], int] = {}
        for p, i in enumerate(group):
            op = copy.deepcopy(self.ops[i])
            outputs = []
            for k, t in enumerate(op.outputs):
                local[(p, k)] = _new_tensor(sg, self.sg.tensors[int(t)], b"", quant[(p, k)])
                outputs.append(local[(p, k)])
            inputs = [self._body_input(int(t), entry, local, carry_in, step_inputs, sg)
                      for t, entry in zip(op.inputs, self.body_sig[p][3])]
            op.inputs, op.outputs = np.array(inputs, dtype=np.int32), np.array(outputs, dtype=np.int32)
            self._rebias(op, sg)
            ops.append(op)
        one = _new_const(self.model, sg, np.array([1], np.int32), b"one")
        next_step = _new_tensor(sg, sg.tensors[counter], b"_next")
        ops.append(self._op(OP.ADD, [counter, one], [next_step], schema.BuiltinOptions.AddOptions,
                            schema.AddOptionsT()))
        sg.operators = ops
        sg.inputs = np.array([counter, *carry_in.values(), *x_in.values()], dtype=np.int32)
        sg.outputs = np.array([next_step, *[local[pk] for pk in carries], *x_in.values()], dtype=np.int32)
        return sg

    def _body_input(self, tensor: int, entry: tuple, local, carry_in, step_inputs, sg) -> int:
        kind = entry[0]
        if kind == "local":
            return local[(entry[1], entry[2])]
        if kind == "carry":
            return carry_in[(entry[1], entry[2])]
        if kind == "step":
            return step_inputs[tensor]
        return -1 if kind == "none" else self._in_subgraph(tensor, sg)

    def _rebias(self, op, sg) -> None:
        """An int32 bias re-derived from its float value at the body's input scale (input scale x weight scale)."""
        if builtin(self.model, op) not in (OP.FULLY_CONNECTED, OP.CONV_2D) or len(op.inputs) < 3 or op.inputs[2] < 0:
            return
        bias = sg.tensors[int(op.inputs[2])]
        q_in, q_w = sg.tensors[int(op.inputs[0])].quantization, sg.tensors[int(op.inputs[1])].quantization
        if bias.type != INT32 or bias.quantization is None or bias.quantization.scale is None:
            return
        values = _array(self.model, bias, np.int32) * np.asarray(bias.quantization.scale, np.float64)
        scale = float(q_in.scale[0]) * np.asarray(q_w.scale, np.float64)
        new = copy.deepcopy(bias)
        new.quantization.scale = np.broadcast_to(scale, values.shape).astype(np.float32) if scale.size > 1 else \
            np.array([scale[0]], np.float32)
        new.quantization.zeroPoint = np.zeros(len(new.quantization.scale), np.int64)
        new.buffer = new_buffer(self.model, np.round(values / scale).astype(np.int32).tobytes())
        sg.tensors.append(new)
        op.inputs = np.array([*op.inputs[:2], len(sg.tensors) - 1, *op.inputs[3:]], dtype=np.int32)

    def _cond(self, loop_inputs) -> schema.SubGraphT:
        sg = schema.SubGraphT()
        sg.name, sg.tensors = b"while_cond", []
        inputs = [_new_tensor(sg, self.sg.tensors[t], b"", keep_buffer=False) for t in loop_inputs]
        limit = _new_const(self.model, sg, np.array([self.last + 1], np.int32), b"steps")
        flag = _new_tensor(sg, self.sg.tensors[loop_inputs[0]], b"/running", keep_buffer=False)
        sg.tensors[flag].type, sg.tensors[flag].quantization = BOOL, None
        sg.operators = [self._op(OP.LESS, [inputs[0], limit], [flag], schema.BuiltinOptions.LessOptions,
                                 schema.LessOptionsT())]
        sg.inputs, sg.outputs = np.array(inputs, dtype=np.int32), np.array([flag], dtype=np.int32)
        return sg

    # --- quantization ---------------------------------------------------------------------------------
    def _body_quantization(self) -> dict[tuple[int, int], schema.QuantizationParametersT | None]:
        """Each body tensor's quantization: the union of its ranges over the rolled steps (and the loop's initial
        value for a carry); None for an unquantized tensor."""
        quant = {}
        carries = set(self.carries())
        for p in range(len(self.groups[self.first])):
            for k in range(len(self.ops[self.groups[self.first][p]].outputs)):
                tensors = [int(self.ops[self.groups[t][p]].outputs[k]) for t in range(self.first, self.last + 1)]
                if (p, k) in carries:
                    tensors.append(self.initial[(p, k)])
                quant[(p, k)] = self._union([self.sg.tensors[t] for t in tensors],
                                            [self.ops[self.producer[t]] for t in tensors])
        return quant

    def _union(self, tensors, producers) -> schema.QuantizationParametersT | None:
        params = [t.quantization for t in tensors]
        if any(q is None or q.scale is None or len(q.scale) != 1 for q in params) or tensors[0].type != INT8:
            if any(q is not None and q.scale is not None and len(q.scale) for q in params):
                raise _NoRoll  # per-channel or non-int8 quantized activations: not rolled
            return None
        ranges = [((-128 - int(q.zeroPoint[0])) * float(q.scale[0]), (127 - int(q.zeroPoint[0])) * float(q.scale[0]))
                  for q in params]
        if len(set(ranges)) == 1:
            return copy.deepcopy(params[0])
        if not all(builtin(self.model, op) in FREE_OUTPUT_SCALE for op in producers):
            raise _NoRoll  # a fixed-scale or scale-copying op would get another output scale
        low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
        scale = (high - low) / 255.0
        union = copy.deepcopy(params[0])
        union.scale = np.array([scale], np.float32)
        union.zeroPoint = np.array([int(np.clip(np.round(-128 - low / scale), -128, 127))], np.int64)
        return union

    def _requantize(self, tensor: int, quant) -> None:
        """The loop's initial value takes the body's quantization (WHILE copies bytes); its producer and readers
        must take any scale."""
        if quant is None or _same_quant(self.sg.tensors[tensor].quantization, quant):
            return
        producer = self.producer.get(tensor)
        if producer is None or builtin(self.model, self.ops[producer]) not in FREE_OUTPUT_SCALE or \
                not all(builtin(self.model, self.ops[r]) in READ_ANY_SCALE for r in self.readers.get(tensor, [])):
            raise _NoRoll
        self.sg.tensors[tensor].quantization = copy.deepcopy(quant)
        for reader in self.readers.get(tensor, []):
            self._rebias(self.ops[reader], self.sg)

    # --- small helpers --------------------------------------------------------------------------------
    def _op(self, builtin: int, inputs, outputs, options_type: int, options) -> schema.OperatorT:
        op = schema.OperatorT()
        op.opcodeIndex = opcode_index(self.model, builtin)
        op.inputs, op.outputs = np.array(inputs, dtype=np.int32), np.array(outputs, dtype=np.int32)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        return op

    def _const_int32(self, values: np.ndarray, name: bytes) -> int:
        return _new_const(self.model, self.sg, values, name)

    def _tensor_like(self, tensor: int, suffix: bytes, quant) -> int:
        return _new_tensor(self.sg, self.sg.tensors[tensor], suffix, quant, keep_buffer=False)

    def _constants(self) -> set[int]:
        return {k for k, t in enumerate(self.sg.tensors) if _has_data(self.model, t)}


# --- finding the recurrence ----------------------------------------------------------------------------

def _sources(job: _Roll) -> list[_Source]:
    """The sequence projections (FULLY_CONNECTED over X, SPLIT on time) of one length T >= WHILE_MIN_STEPS. X is
    (..., T, F) with unit leading axes: (T, F), (1, T, F), or (1, 1, T, F) after a Conv1d front end."""
    found = []
    for i, op in enumerate(job.ops):
        if builtin(job.model, op) != OP.SPLIT or len(op.outputs) < WHILE_MIN_STEPS:
            continue
        axis, data = int(op.inputs[0]), int(op.inputs[1])
        fc = job.producer.get(data)
        if fc is None or builtin(job.model, job.ops[fc]) != OP.FULLY_CONNECTED or job.readers.get(data) != [i]:
            continue
        x = int(job.ops[fc].inputs[0])
        x_shape = list(job.sg.tensors[x].shape)
        steps = len(op.outputs)
        if _array(job.model, job.sg.tensors[axis], np.int32).tolist() not in ([0], 0) or \
                len(x_shape) < 2 or x_shape[-2] != steps or any(d != 1 for d in x_shape[:-2]) or \
                list(job.sg.tensors[data].shape) != [steps, job.sg.tensors[data].shape[-1]]:
            continue
        found.append(_Source(fc, i, x, tuple(int(t) for t in op.outputs)))
    if not found or len({len(s.outputs) for s in found}) != 1:
        raise _NoRoll
    return found


def _steps(job: _Roll) -> list[list[int]]:
    """The op indices of each step: an op belongs to the latest step whose split output it depends on."""
    step = {out: t for s in job.sources for t, out in enumerate(s.outputs)}
    groups: list[list[int]] = [[] for _ in range(job.total)]
    for i, op in enumerate(job.ops):
        if job._is_source(i):
            continue
        t = max((step.get(int(x), -1) for x in op.inputs), default=-1)
        for out in op.outputs:
            step[int(out)] = t
        if t >= 0:
            groups[t].append(i)
    return groups


def _signature(job: _Roll, t: int) -> tuple | None:
    """Step t's ops as comparable tuples: builtin, options, output types/shapes and where each input comes from."""
    group, position = job.groups[t], {i: p for p, i in enumerate(job.groups[t])}
    previous = {i: p for p, i in enumerate(job.groups[t - 1])} if t > 0 else {}
    step_input = {s.outputs[t]: n for n, s in enumerate(job.sources)}
    signature = []
    for i in group:
        op = job.ops[i]
        entries = []
        for x in (int(x) for x in op.inputs):
            producer = job.producer.get(x)
            if x < 0:
                entries.append(("none",))
            elif x in step_input:
                entries.append(("step", step_input[x]))
            elif producer in position:
                entries.append(("local", position[producer], list(job.ops[producer].outputs).index(x)))
            elif producer in previous:
                entries.append(("carry", previous[producer], list(job.ops[producer].outputs).index(x)))
            elif _has_data(job.model, job.sg.tensors[x]):
                entries.append(("const", _const_key(job.model, job.sg.tensors[x])))
            elif producer is None or job._is_source(producer):
                return None  # another step's input or a graph input read directly: not a plain step
            else:
                entries.append(("outside", x))
        outputs = tuple((job.sg.tensors[int(o)].type, tuple(job.sg.tensors[int(o)].shape)) for o in op.outputs)
        signature.append((builtin(job.model, op), _options(op), outputs, tuple(entries)))
    return tuple(signature)


def _longest_run(signatures: list) -> tuple[int, int]:
    """The first and last step of the longest run of equal signatures (biases compared by float value), with the
    step before the run when only the positions of its carries differ (it reads a step of another shape: step 0)."""
    best, start = (0, -1), 0
    for t in range(1, len(signatures) + 1):
        if t == len(signatures) or signatures[t] is None or not _same(signatures[t], signatures[start]):
            if signatures[start] is not None and t - 1 - start > best[1] - best[0]:
                best = (start, t - 1)
            start = t
    first, last = best
    if first > 0 and _same(signatures[first - 1], signatures[first], carries=False):
        first -= 1
    if last - first + 1 < 2 or first == 0:  # step 0 has no state to carry in
        raise _NoRoll
    return first, last


def _same(a: tuple | None, b: tuple | None, carries: bool = True) -> bool:
    """Equal signatures; with `carries` False, carry inputs may come from other positions of the previous step."""
    if a is None or b is None or len(a) != len(b):
        return False
    for op_a, op_b in zip(a, b):
        if op_a[:3] != op_b[:3] or len(op_a[3]) != len(op_b[3]):
            return False
        for x, y in zip(op_a[3], op_b[3]):
            if x[0] != y[0] or (x[0] == "const" and not _same_const(x[1], y[1])) or \
                    (x[0] not in ("const", "carry") and x != y) or (x[0] == "carry" and carries and x != y):
                return False
    return True


def _const_key(model: schema.ModelT, tensor) -> tuple:
    """(type, shape, bytes, scales, zero points, float value for an int32 bias)."""
    q = tensor.quantization
    scales = tuple(np.asarray(q.scale).tolist()) if q is not None and q.scale is not None else ()
    zeros = tuple(np.asarray(q.zeroPoint).tolist()) if q is not None and q.zeroPoint is not None else ()
    raw = bytes(model.buffers[tensor.buffer].data)
    value = _array(model, tensor, np.int32) * np.asarray(scales) if tensor.type == INT32 and scales else None
    return tensor.type, tuple(tensor.shape), raw, scales, zeros, value


def _same_const(a: tuple, b: tuple) -> bool:
    if a[4] is None or b[4] is None or a[5] is None or b[5] is None:
        return a[:5] == b[:5]
    # an int32 bias quantized at each step's input scale: equal when the float values agree within rounding
    return a[:2] == b[:2] and np.allclose(a[5], b[5], rtol=0, atol=max(max(a[3]), max(b[3])))


def _options(op) -> tuple:
    options = op.builtinOptions
    return op.builtinOptionsType, tuple(sorted(vars(options).items())) if options is not None else ()


# --- flatbuffer helpers --------------------------------------------------------------------------------

def _same_quant(a, b) -> bool:
    return (a is None) == (b is None) and (a is None or (np.array_equal(a.scale, b.scale) and
                                                        np.array_equal(a.zeroPoint, b.zeroPoint)))


def _has_data(model: schema.ModelT, tensor) -> bool:
    data = model.buffers[tensor.buffer].data
    return data is not None and len(data) > 0


def _array(model: schema.ModelT, tensor, dtype) -> np.ndarray:
    return np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtype)


def _new_tensor(sg, like, suffix: bytes, quant=None, shape=None, keep_buffer: bool = True) -> int:
    """A copy of tensor `like` appended to `sg` (its buffer kept, else buffer 0: no data); its index."""
    tensor = copy.deepcopy(like)
    tensor.name = (like.name or b"tensor") + suffix
    if quant is not None:
        tensor.quantization = copy.deepcopy(quant)
    if shape is not None:
        tensor.shape = np.array(shape, dtype=np.int32)
        tensor.shapeSignature = None
    if not keep_buffer:
        tensor.buffer = 0
    sg.tensors.append(tensor)
    return len(sg.tensors) - 1


def _new_const(model: schema.ModelT, sg, values: np.ndarray, name: bytes) -> int:
    tensor = schema.TensorT()
    tensor.name, tensor.type, tensor.buffer = name, INT32, new_buffer(model, values.tobytes())
    tensor.shape = np.array(values.shape, dtype=np.int32)
    sg.tensors.append(tensor)
    return len(sg.tensors) - 1


def _while_options(cond: int, body: int) -> schema.WhileOptionsT:
    options = schema.WhileOptionsT()
    options.condSubgraphIndex, options.bodySubgraphIndex = cond, body
    return options


def _gather_options(axis: int) -> schema.GatherOptionsT:
    options = schema.GatherOptionsT()
    options.axis, options.batchDims = axis, 0
    return options


def _topological(ops: list, available: set[int]) -> list:
    """`ops` in an order that runs each after its inputs' producers, keeping the given order where it can."""
    produced = {int(t) for op in ops for t in op.outputs}
    done, ordered, pending = set(available), [], list(ops)
    while pending:
        for n, op in enumerate(pending):
            if all(int(t) < 0 or int(t) in done or int(t) not in produced for t in op.inputs):
                ordered.append(pending.pop(n))
                done |= {int(t) for t in op.outputs}
                break
        else:
            raise _NoRoll  # a cycle: cannot happen for a graph rolled as above
    return ordered
