"""TFLM's WHILE kernel and what a loop body hub builds must respect (hub.tflite.roll).

Read at hub.knowledge.tflm_kernels.TFLM_VERSION (tflite-micro 90b983c2) from tensorflow/lite/micro/:
- kernels/while.cc WhilePrepare (lines 44-75): the cond and body subgraphs take as many inputs as the op has,
  the body returns as many outputs; the cond's output 0 is read as a bool (WhileEval, line 100).
- kernels/while.cc WhileEval (lines 77-125) and kernels/kernel_util.cc (lines 150-280): the op's inputs are
  memcpy'd to its outputs and to the cond's inputs, then per iteration the op's outputs to the body's inputs and
  the body's outputs back to the op's outputs; sizes must match (ValidateAndGetTensorSizes) and nothing is
  requantized, so every loop-carried tensor needs one quantization across the op, cond and body.
- micro_allocation_info.cc MarkSubgraphLifetimesIfNecessary (lines 54-101): a WHILE's cond and body tensors are
  planned inside the op's lifetime, sharing the arena with the main graph; every tensor of every subgraph still gets
  TFLM's per-tensor bookkeeping, and an offline plan lists all subgraphs' tensors in order (lines 206-216).
- kernels/gather.cc (lines 119-216): int8 params with int32 indices; kernels/comparisons.cc LESS (int32);
  kernels/add.cc (line 61): int32 ADD - the loop counter's ops.
- kernels/logistic_common.cc (line 46) and kernels/tanh.cc: int8 LOGISTIC / TANH outputs have a fixed scale and
  zero point; SPLIT (kernels/split.cc) copies bytes, so its outputs keep its input's scale.
"""
from __future__ import annotations

from ai_edge_litert.schema_py_generated import BuiltinOperator as _Op

# int8 ops that requantize their output to any scale (the output scale is an op parameter, not a kernel limit)
FREE_OUTPUT_SCALE = frozenset({_Op.ADD, _Op.SUB, _Op.MUL, _Op.FULLY_CONNECTED})
# int8 ops that read an input at any scale (their kernels derive multipliers from it); FULLY_CONNECTED also needs
# its int32 bias at input scale x weight scale, which hub.tflite.roll re-derives
READ_ANY_SCALE = frozenset({_Op.ADD, _Op.SUB, _Op.MUL, _Op.FULLY_CONNECTED, _Op.LOGISTIC, _Op.TANH})
# fewer steps than this stay unrolled: a WHILE's own ops (cond, counter, GATHER) cost about two steps' worth
WHILE_MIN_STEPS = 4
