"""What TensorFlow Lite Micro's kernels accept, as data.

Each row was read from the kernel source named in `source` (paths relative to
tensorflow/lite/micro/ in github.com/tensorflow/tflite-micro) at TFLM_VERSION:
the registered op (micro_mutable_op_resolver.h), the tensor types its Prepare/
Eval switch statements accept, rank limits (kMaxDim constants, NumDimensions
checks, the Broadcast*4DSlow helpers used when shapes differ), the inputs that
must be constant (IsConstantTensor checks), input-count limits, and whether the
kernel takes per-channel quantized weights and a fused activation; what each input
of the weighted ops is (OPERAND_ROLES); the TfLiteType enum; the int8 scale limits.
Beside it: resolver.py (MicroMutableOpResolver's Add* methods, custom ops and what
they need) and arena.py (arena alignment and the persistent-data model).

Type names are those hub.tflite.model uses ("float32", "int8", ...).
"""
from __future__ import annotations

from dataclasses import dataclass

# The sources read, and the interpreter the benchmark runs (pip tflite-micro).
TFLM_VERSION = "tflite-micro@90b983c2 (2026-08-20); pip tflite-micro==0.dev20261023182759"

# int8 input scales at or below which a kernel's Prepare goes wrong, by op:
# SOFTMAX/LOG_SOFTMAX: PreprocessSoftmaxScaling (tensorflow/lite/kernels/internal/quantization_util.cc) calls
# QuantizeMultiplierGreaterThanOne(beta * input_scale * 2^(31-5)), whose TFLITE_CHECK_GT(.., 1.) aborts the
# process when the product is <= 1 (kScaledDiffIntegerBits = 5 in kernels/softmax_common.cc; beta = 1 as
# onnx2tf writes it). LOGISTIC: kernels/logistic_common.cc frexp()s input_scale * 2^27; below 2^-28 the left
# shift turns negative and CalculateInputRadius shifts by a negative amount (undefined behaviour).
MIN_INT8_INPUT_SCALE = {"SOFTMAX": 2.0 ** -26, "LOG_SOFTMAX": 2.0 ** -26, "LOGISTIC": 2.0 ** -28}

# Fused activations whose clamp bounds a kernel's Prepare quantizes with the op's output scale:
# CalculateActivationRangeQuantizedImpl (tensorflow/lite/kernels/kernel_util.cc, Quantize()) TF_LITE_ENSUREs that
# round(bound / scale) fits int32 ("no_integer_overflow_from_quantization was not true"), so an int8/int16 output
# scale below bound / 2^31 fails Prepare (int16x8 Keras MobileNetV2-0.35: a RELU6 depthwise output scale 2.4e-9)
FUSED_ACTIVATION_BOUND = {"RELU6": 6.0, "RELU_N1_TO_1": 1.0}
INT32_LIMIT = 2.0 ** 31


def min_output_scale(fused_activation: str | None) -> float:
    """The smallest output scale TFLM's Prepare takes under `fused_activation` (0 when it has no bound)."""
    return FUSED_ACTIVATION_BOUND.get(fused_activation, 0.0) / INT32_LIMIT


# Ops whose int8/int16 kernels compute their output from their tensors' scales (multipliers set in Prepare from
# input, weight and output scales): a tensor between two of them may take another scale with both ops unchanged.
# Pooling, concatenation, resizing and data movement copy or average the integers as they are (same scale in and
# out) and are not here. kernels/conv_common.cc, depthwise_conv_common.cc, fully_connected_common.cc,
# transpose_conv.cc, add_common.cc, sub_common.cc, mul_common.cc, quantize_common.cc, dequantize_common.cc,
# softmax_common.cc, logistic_common.cc, tanh_common.cc, reduce_common.cc (MEAN).
REQUANTIZING = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "ADD", "SUB", "MUL",
                          "QUANTIZE", "DEQUANTIZE", "SOFTMAX", "LOGISTIC", "TANH", "MEAN"})
# int8-in, int8-out SOFTMAX at invoke: tensorflow/lite/kernels/internal/reference/softmax.h checks
# TFLITE_CHECK(exponent <= 31) with exponent = num_bits_over_unit + 31 - 8, where num_bits_over_unit is
# floor(log2(sum of exp(x - max))) (GetReciprocal in kernels/internal/common.h): the process aborts whenever
# the exps of one row sum to 2^8 = 512 or more, i.e. when 512 or more classes score level with the top one.
# Only rows of at least this many classes can reach it (measured: 1,000 equal logits abort, 4 do not).
SOFTMAX_INT8_ABORT_CLASSES = 512
# The same kernel with an int16 output (int8 in, int16 out) subtracts 16 bits instead of 8 from the exponent, so
# the check only fails at 2^16; what limits it first is the row sum itself, a FixedPoint<int32_t,
# kAccumulationIntegerBits = 12> in reference/softmax.h: a row of more than 4,095 level classes overflows it
# whatever the output type. The int16 output must be zero point -32768, scale 1/65536 (+-0.1 %): Prepare in
# kernels/softmax_common.cc (CalculateSoftmaxParams) ENSUREs both; an int8 output must be -128, exactly 1/256.
SOFTMAX_INT8_MAX_CLASSES = 4095
SOFTMAX_INT16_OUTPUT = (1 / 65536, -32768)  # (scale, zero point) of an int8-in, int16-out SOFTMAX

F32, I8, I16, I32, I64, BOOL, U8, U32 = "float32", "int8", "int16", "int32", "int64", "bool", "uint8", "uint32"
ANY = frozenset({F32, I8, I16, I32, I64, BOOL, U8})  # kernels that only move bytes (RESHAPE, SQUEEZE)
ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6")  # ApplyActivationToVector / ActivationFunctionWithMinMax

# TfLiteType enum values, from tensorflow/compiler/mlir/lite/core/c/tflite_types.h (TFLM_VERSION's commit),
# so firmware can compare `input->type` with the generated kInput0Type; and each element's size in bytes.
TFLITE_TYPES: dict[str, tuple[int, str, int]] = {
    "float32": (1, "kTfLiteFloat32", 4), "int32": (2, "kTfLiteInt32", 4), "uint8": (3, "kTfLiteUInt8", 1),
    "int64": (4, "kTfLiteInt64", 8), "bool": (6, "kTfLiteBool", 1), "int16": (7, "kTfLiteInt16", 2),
    "int8": (9, "kTfLiteInt8", 1), "float16": (10, "kTfLiteFloat16", 2), "float64": (11, "kTfLiteFloat64", 8),
    "uint32": (16, "kTfLiteUInt32", 4), "uint16": (17, "kTfLiteUInt16", 2),
}

# What each input of an op is, by TFLite input index (the kernels' kInputTensor/kFilterTensor/... constants
# and TFLite's schema.fbs operator comments). INPUT: an activation whose type picks the kernel (Kernel.types);
# WEIGHTS and BIAS: trained constants (int8 weights, int32/int64 biases in a quantized model); STATE: a
# variable tensor the op updates; INDEX: positions or lookup ids; SHAPE/PARAM: sizes, axes, conditions.
# Ops not listed take activations or small parameters only: their data tensor is the first computed,
# non-bool input. CONV_3D / CONV_3D_TRANSPOSE are TFLite ops TFLM lacks, listed for the layer table.
INPUT, WEIGHTS, BIAS, STATE, INDEX, SHAPE, PARAM = "input", "weights", "bias", "state", "index", "shape", "param"
_LSTM = (INPUT, *[WEIGHTS] * 8, *[WEIGHTS] * 3, *[BIAS] * 4, WEIGHTS, BIAS, STATE, STATE, *[WEIGHTS] * 4)
OPERAND_ROLES: dict[str, tuple[str, ...]] = {
    "CONV_2D": (INPUT, WEIGHTS, BIAS),  # kernels/conv_common.cc kInputTensor, kFilterTensor, kBiasTensor
    "DEPTHWISE_CONV_2D": (INPUT, WEIGHTS, BIAS),  # kernels/depthwise_conv_common.cc
    "FULLY_CONNECTED": (INPUT, WEIGHTS, BIAS),  # kernels/fully_connected_common.cc
    # kernels/transpose_conv.cc: kOutputShapeTensor 0, kFilterTensor 1, kInputTensor 2, kBiasTensor 3
    "TRANSPOSE_CONV": (SHAPE, WEIGHTS, INPUT, BIAS),
    "BATCH_MATMUL": (INPUT, WEIGHTS),  # kernels/batch_matmul.cc: rhs is weights when constant
    # kernels/svdf_common.cc: input, weights_feature, weights_time, bias, activation_state
    "SVDF": (INPUT, WEIGHTS, WEIGHTS, BIAS, STATE),
    # kernels/lstm_shared.h: input; input/recurrent-to-gate weights (1-8); peepholes (9-11); gate biases
    # (12-15); projection weights and bias (16-17); output and cell state (18-19); layer norms (20-23)
    "UNIDIRECTIONAL_SEQUENCE_LSTM": _LSTM,
    "EMBEDDING_LOOKUP": (INDEX, WEIGHTS),  # kernels/embedding_lookup.cc: int32 ids, value table
    "PRELU": (INPUT, WEIGHTS),  # kernels/prelu_common.cc: input, alpha
    "SELECT_V2": (PARAM, INPUT, INPUT),  # kernels/select.cc: bool condition, x, y
    "SPLIT": (PARAM, INPUT),  # kernels/split.cc: axis, input
    "GATHER": (INPUT, INDEX),  # kernels/gather.cc: params, indices
    "GATHER_ND": (INPUT, INDEX),
    "CONV_3D": (INPUT, WEIGHTS, BIAS),
    "CONV_3D_TRANSPOSE": (SHAPE, WEIGHTS, INPUT, BIAS),
}


def role(op: str, index: int) -> str | None:
    """The role of input `index` of a TFLite op; None when the op is not in OPERAND_ROLES."""
    known = OPERAND_ROLES.get(op)
    return known[index] if known is not None and index < len(known) else None


def typed_inputs(op: str) -> tuple[int, ...] | None:
    """Indices of the inputs whose type picks the kernel (INPUT, else the WEIGHTS a lookup table is); None if
    the op is not in OPERAND_ROLES."""
    known = OPERAND_ROLES.get(op)
    if known is None:
        return None
    return tuple(i for i, r in enumerate(known) if r == INPUT) or tuple(i for i, r in enumerate(known) if r == WEIGHTS)



@dataclass(frozen=True)
class Kernel:
    """One TFLM builtin op and what its kernel accepts."""

    op: str
    types: frozenset[str]  # types of the data tensor (OPERAND_ROLES, else the first computed one), output 0
    source: str  # kernel file under tensorflow/lite/micro/
    max_rank: int | None = None  # largest rank of input 0 the kernel takes
    rank: int | None = None  # exact rank required (conv/pool kernels are 4-D only)
    broadcast_rank: int | None = None  # largest rank when the inputs' shapes differ
    const_inputs: tuple[int, ...] = ()  # TFLite input indices that must be constant tensors
    per_channel: bool = False  # accepts per-channel quantized weights
    max_inputs: int | None = None
    fused_activations: tuple[str, ...] = ()
    index_types: frozenset[str] = frozenset()  # types input 1 (positions/indices) may have, when it is an index
    output_types: frozenset[str] = frozenset()  # output 0 types the kernel writes, when narrower than `types`
    # int8 Prepare rescales both inputs to twice the larger input scale, then to the output scale with this left
    # shift: QuantizeMultiplierSmallerThanOneExp(2 * max(s1, s2) / (2^shift * s_out)), whose
    # TFLITE_CHECK_LT(double_multiplier, 1.) (tensorflow/lite/kernels/internal/quantization_util.cc:117) aborts
    # the process when an input scale is 2^(shift-1) or more times the output's. 0: no such rescale.
    int8_rescale_shift: int = 0


def _k(op: str, types, source: str, **kw) -> Kernel:
    return Kernel(op, frozenset(types), "kernels/" + source, **kw)


_FLOAT = (F32,)
_QUANT = (F32, I8, I16)
_ROWS = [
    _k("ABS", _QUANT, "elementwise.cc"),
    # CalculateOpDataAdd in add_common.cc:48-67 (left_shift 20 for int8).
    _k("ADD", (F32, I8, I16, I32), "add.cc", broadcast_rank=4, fused_activations=ACTIVATIONS, int8_rescale_shift=20),
    _k("ADD_N", (F32, I8), "add_n.cc"),
    # Eval: input float32/int8, axis int32, output int32 only ("Only int32_t are supported currently"),
    # checked at invoke, not in Prepare (there is none).
    _k("ARG_MAX", (F32, I8), "arg_min_max.cc", const_inputs=(1,), output_types=frozenset({I32})),
    _k("ARG_MIN", (F32, I8), "arg_min_max.cc", const_inputs=(1,), output_types=frozenset({I32})),
    _k("ASSIGN_VARIABLE", ANY, "assign_variable.cc"),
    _k("AVERAGE_POOL_2D", _QUANT, "pooling.cc", rank=4, fused_activations=ACTIVATIONS),
    _k("BATCH_MATMUL", _QUANT, "batch_matmul.cc", max_rank=5),
    _k("BATCH_TO_SPACE_ND", (F32, I8), "batch_to_space_nd.cc", max_rank=4),
    _k("BROADCAST_ARGS", (I32, I64), "broadcast_args.cc"),
    _k("BROADCAST_TO", ANY, "broadcast_to.cc", max_rank=5),
    _k("CALL_ONCE", ANY, "call_once.cc"),
    _k("CAST", (BOOL, F32, I8, I16, I32, U32), "cast.cc"),
    _k("CEIL", _FLOAT, "ceil.cc"),
    _k("CONCATENATION", (BOOL, F32, I8, I16, I32, I64), "concatenation.cc", max_rank=6, max_inputs=10,
       fused_activations=ACTIVATIONS),
    _k("CONV_2D", _QUANT, "conv.cc", rank=4, per_channel=True, fused_activations=ACTIVATIONS),
    _k("COS", _FLOAT, "elementwise.cc"),
    _k("CUMSUM", (F32, I8, I32), "cumsum.cc", const_inputs=(1,)),
    _k("DEPTH_TO_SPACE", (F32, I8), "depth_to_space.cc", rank=4),
    _k("DEPTHWISE_CONV_2D", _QUANT, "depthwise_conv.cc", rank=4, per_channel=True, fused_activations=ACTIVATIONS),
    _k("DEQUANTIZE", (I8, I16, U8, F32), "dequantize.cc"),
    _k("DIV", (F32, I8, I32), "div.cc", broadcast_rank=5, fused_activations=ACTIVATIONS),
    _k("DYNAMIC_UPDATE_SLICE", (F32, I8, I16, I32, I64), "dynamic_update_slice.cc"),
    _k("ELU", (F32, I8), "elu.cc"),
    _k("EMBEDDING_LOOKUP", (F32, I8), "embedding_lookup.cc"),
    _k("EQUAL", (BOOL, F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("NOT_EQUAL", (BOOL, F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("GREATER", (F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("GREATER_EQUAL", (F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("LESS", (F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("LESS_EQUAL", (F32, I8, I32, I64), "comparisons.cc", broadcast_rank=4),
    _k("EXP", _FLOAT, "exp.cc"),
    _k("EXPAND_DIMS", (F32, I8, I16, I32), "expand_dims.cc", const_inputs=(1,)),
    _k("FILL", (F32, I8, I16, I32, I64), "fill.cc"),
    _k("FLOOR", _FLOAT, "floor.cc"),
    _k("FLOOR_DIV", _FLOAT, "floor_div.cc", broadcast_rank=4),
    _k("FLOOR_MOD", _FLOAT, "floor_mod.cc", broadcast_rank=4),
    _k("FULLY_CONNECTED", _QUANT, "fully_connected.cc", per_channel=True, fused_activations=ACTIVATIONS),
    _k("GATHER", (F32, I8), "gather.cc", index_types=frozenset({I32})),
    _k("GATHER_ND", (F32, I8), "gather_nd.cc", index_types=frozenset({I32})),
    _k("HARD_SWISH", (F32, I8), "hard_swish.cc"),
    _k("IF", ANY, "if.cc"),
    # Over the last axis only (Eval: trailing_dim = DimensionsCount() - 1, l2norm.cc:114); epsilon fixed at 1e-6
    # (l2norm.cc:104), none in int8; int8 output in 1/128 steps, [-1, 127/128] (reference/integer_ops/
    # l2normalization.h:31). Not what F.normalize (any axis, eps 1e-12) is: hub.graph.rules.l2_normalize.
    _k("L2_NORMALIZATION", (F32, I8), "l2norm.cc", max_rank=4),
    _k("L2_POOL_2D", _FLOAT, "l2_pool_2d.cc", rank=4),
    _k("LEAKY_RELU", _QUANT, "leaky_relu.cc"),
    _k("LOG", _FLOAT, "elementwise.cc"),
    _k("LOG_SOFTMAX", (F32, I8), "log_softmax.cc"),
    _k("LOGICAL_AND", (BOOL,), "logical.cc", broadcast_rank=4),
    _k("LOGICAL_OR", (BOOL,), "logical.cc", broadcast_rank=4),
    _k("LOGICAL_NOT", (BOOL,), "elementwise.cc"),
    _k("LOGISTIC", _QUANT, "logistic.cc"),
    _k("MAXIMUM", (F32, I8, I16, I32, I64), "maximum_minimum.cc", broadcast_rank=5),
    _k("MINIMUM", (F32, I8, I16, I32, I64), "maximum_minimum.cc", broadcast_rank=5),
    _k("MAX_POOL_2D", _QUANT, "pooling.cc", rank=4, fused_activations=ACTIVATIONS),
    _k("MEAN", _QUANT, "reduce.cc", const_inputs=(1,)),
    _k("MIRROR_PAD", (F32, I8, I32, I64), "mirror_pad.cc", const_inputs=(1,)),
    _k("MUL", (F32, I8, I16, I32), "mul.cc", broadcast_rank=4, fused_activations=ACTIVATIONS),
    _k("NEG", (F32, I8), "neg.cc"),
    _k("PACK", (F32, I8, I16, I32, I64), "pack.cc"),
    _k("PAD", (F32, I8, I16, I32), "pad.cc", max_rank=4, const_inputs=(1,)),
    _k("PADV2", (F32, I8, I16, I32), "pad.cc", max_rank=4, const_inputs=(1,)),
    _k("PRELU", _QUANT, "prelu.cc"),
    _k("QUANTIZE", (F32, I8, I16, I32, U8), "quantize.cc"),
    _k("READ_VARIABLE", ANY, "read_variable.cc"),
    _k("REDUCE_ALL", (BOOL,), "reduce.cc", const_inputs=(1,)),
    _k("REDUCE_MAX", (F32, I8), "reduce.cc", const_inputs=(1,)),
    _k("REDUCE_MIN", (F32, I8), "reduce.cc", const_inputs=(1,)),
    _k("RELU", _QUANT, "activations.cc"),
    _k("RELU6", _QUANT, "activations.cc"),
    _k("RESHAPE", ANY, "reshape.cc"),
    _k("RESIZE_BILINEAR", (F32, I8), "resize_bilinear.cc", rank=4, const_inputs=(1,)),
    _k("RESIZE_NEAREST_NEIGHBOR", _QUANT, "resize_nearest_neighbor.cc", rank=4, const_inputs=(1,)),
    _k("REVERSE_V2", ANY, "reverse.cc", max_rank=8),
    _k("ROUND", _FLOAT, "round.cc"),
    # int16: the elementwise.cc read for this table lists float32 and int8, but the pinned tflite-micro
    # wheel (0.dev20261023) runs int16 RSQRT: measured in the int16x8 LayerNorm, RMSNorm and LRN rewrites.
    _k("RSQRT", _QUANT, "elementwise.cc"),
    _k("SELECT_V2", _QUANT, "select.cc", broadcast_rank=5),
    _k("SHAPE", ANY, "shape.cc"),
    _k("SIN", _FLOAT, "elementwise.cc"),
    _k("SLICE", (BOOL, F32, I8, I16, I32, I64), "slice.cc", max_rank=5),
    _k("SOFTMAX", _QUANT, "softmax.cc"),
    _k("SPACE_TO_BATCH_ND", (F32, I8), "space_to_batch_nd.cc", max_rank=4),
    _k("SPACE_TO_DEPTH", (F32, I8), "space_to_depth.cc", rank=4),
    _k("SPLIT", (F32, I8, I16, I32), "split.cc", const_inputs=(0,)),
    _k("SPLIT_V", (F32, I8, I16, I32), "split_v.cc", const_inputs=(2,)),
    _k("SQRT", _FLOAT, "elementwise.cc"),
    _k("SQUARE", _FLOAT, "elementwise.cc"),
    _k("SQUARED_DIFFERENCE", (F32, I8, I16, I32), "squared_difference.cc", broadcast_rank=4),
    _k("SQUEEZE", ANY, "squeeze.cc"),
    _k("STRIDED_SLICE", (BOOL, F32, I8, I16, I32), "strided_slice.cc", max_rank=4, const_inputs=(1, 2, 3)),
    # CalculateOpDataSub in sub_common.cc:51-70 (left_shift 20 for int8).
    _k("SUB", (F32, I8, I16, I32), "sub.cc", broadcast_rank=5, fused_activations=ACTIVATIONS, int8_rescale_shift=20),
    _k("SUM", _QUANT, "reduce.cc", const_inputs=(1,)),
    _k("SVDF", _QUANT, "svdf.cc"),
    _k("TANH", _QUANT, "tanh.cc"),
    _k("TRANSPOSE", _QUANT, "transpose.cc", max_rank=5, const_inputs=(1,)),
    # Output shape from the output tensor's own dims: input 0 (output_shape) may be a run-time tensor, as in
    # integration_tests/seanet/transpose_conv/*.tflite, where it is a model input (no IsConstantTensor check).
    _k("TRANSPOSE_CONV", _QUANT, "transpose_conv.cc", rank=4, per_channel=True),
    _k("UNIDIRECTIONAL_SEQUENCE_LSTM", _QUANT, "unidirectional_sequence_lstm.cc"),
    _k("UNPACK", (F32, I8, I16, I32), "unpack.cc"),
    _k("VAR_HANDLE", ANY, "var_handle.cc"),
    _k("WHILE", ANY, "while.cc"),
    _k("ZEROS_LIKE", (F32, I8, I32, I64), "zeros_like.cc"),
]
KERNELS: dict[str, Kernel] = {row.op: row for row in _ROWS}

# TFLite builtins TFLM has no kernel for, with the rewrite that avoids them (any builtin not in KERNELS
# is missing; these are the ones models meet, with a concrete way out). hub's own rewrite rules are not
# named here: hub check adds them for the ONNX layer the op stands for (ONNX_LAYER).
MISSING_HINTS: dict[str, str] = {
    "GELU": "in Keras write it as x*sigmoid(1.702x) (LOGISTIC and MUL run on TFLM)",
    "POW": "use a constant exponent of 2 or 3 (becomes MUL), or exp(y*log(x)) in float32",
    "TILE": "use BROADCAST_TO via Expand, or concatenate copies",
    "TOPK_V2": "use ArgMax for k=1, or do top-k on the host",
    "RANGE": "make the range a constant tensor",
    "WHERE": "use a fixed-size mask with Where(cond, x, y) (SELECT_V2) instead of indices",
    "ONE_HOT": "compare indices with a constant arange (EQUAL) and cast",
    "SCATTER_ND": "express the update as a mask and Where, or precompute it",
    "REDUCE_PROD": "use exp(sum(log(x))) in float32, or avoid the product",
    "SIGN": "use Where(x>0,1,0)-Where(x<0,1,0) (SELECT_V2)",
    "SELECT": "use the broadcasting SELECT_V2 (opset-9+ Where with matching ranks)",
    "CONV_3D": "fold the depth axis into channels and use Conv2d",
    "CONV_3D_TRANSPOSE": "fold the depth axis into channels and use ConvTranspose2d",
    "LOCAL_RESPONSE_NORMALIZATION": "replace LRN with BatchNorm, or drop it",
    "RELU_N1_TO_1": "use Clip(-1, 1) after an op with a fused activation, or MINIMUM/MAXIMUM",
    "RELU_0_TO_1": "use Clip(0, 1) as MINIMUM and MAXIMUM",
    "NON_MAX_SUPPRESSION_V4": "run NMS on the host, or use TFLite_Detection_PostProcess",
    "NON_MAX_SUPPRESSION_V5": "run NMS on the host, or use TFLite_Detection_PostProcess",
    "LSTM": "unroll it over its static length",
    "BIDIRECTIONAL_SEQUENCE_LSTM": "run two unidirectional LSTMs and concatenate",
    "UNIDIRECTIONAL_SEQUENCE_RNN": "unroll the RNN into FullyConnected and Tanh",
    "RNN": "unroll the RNN into FullyConnected and Tanh",
    "SIGN_BIT": "use comparisons and SELECT_V2",
    "REDUCE_ANY": "cast to float and use REDUCE_MAX",
    "GATHER_ELEMENTS": "use Gather on a flattened tensor",
    "REVERSE_SEQUENCE": "use Slice and Concat per sequence",
    "MATRIX_DIAG": "build the diagonal as a constant mask and MUL",
    "MATRIX_SET_DIAG": "build the diagonal as a constant mask and MUL",
    "SEGMENT_SUM": "precompute the segments as a matmul with a constant 0/1 matrix",
    "UNSORTED_SEGMENT_SUM": "precompute the segments as a matmul with a constant 0/1 matrix",
    "UNIQUE": "do it on the host",
    "RANDOM_UNIFORM": "feed random numbers as an input",
    "RANDOM_STANDARD_NORMAL": "feed random numbers as an input",
    "MULTINOMIAL": "sample on the host",
    "ATAN2": "approximate atan2 with a polynomial in float32",
    "BITWISE_XOR": "use logical ops on bool tensors",
    "RIGHT_SHIFT": "use integer division by a power of two in float32",
    "SPARSE_TO_DENSE": "use a dense constant",
    "FAKE_QUANT": "remove fake-quant nodes before export",
    "HASHTABLE_LOOKUP": "do lookups on the host",
}

# The ONNX op of the same layer, for builtins above a model converted from ONNX may avoid (hub check names
# the rewrite rules that unblock that ONNX op, hub.graph.rules UNBLOCKS, after the hint).
ONNX_LAYER: dict[str, str] = {"GELU": "Gelu", "LOCAL_RESPONSE_NORMALIZATION": "LRN", "LSTM": "LSTM",
                              "UNIDIRECTIONAL_SEQUENCE_RNN": "RNN", "RNN": "RNN"}


def missing_hint(op: str) -> str:
    return MISSING_HINTS.get(op, "rewrite the layer with ops TFLM has (see micro_mutable_op_resolver.h)")
