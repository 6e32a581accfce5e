"""What onnx2tf 1.29.24 (plus TensorFlow 2.19's TFLite converter, builtins only) turns each ONNX op into.

Each row was read from onnx2tf's own converter for that op (`onnx2tf/ops/<Op>.py`
in the installed package: the tf.* calls it makes) and checked against the
ops found in real conversions of the onnx backend node tests
(bench/check_accuracy.py). `variants` lists attribute/shape conditions that
change the result; the first whose condition holds wins. Conditions are names
of small predicates in hub.check.onnx (CONDITIONS).

`fails` is set when the conversion itself cannot produce a builtin-only
TFLite model (the TF op has no TFLite builtin, so TFLite would need a Flex
op, which TFLM does not have; or onnx2tf has no converter).
`hint` says what to do when the op blocks; the rewrite rules that unblock an op are not named here:
hub check names them from the rules themselves (hub.graph.rules: UNBLOCKS, DOES) before the hint.
`const_operands` maps ONNX input index -> the TFLite input index it feeds in
the emitted ops, checked where that op's kernel needs a constant (see tflm_kernels.Kernel.const_inputs).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

ONNX2TF_VERSION = "onnx2tf 1.29.24 (tensorflow 2.19.0 TFLiteConverter, TFLITE_BUILTINS only)"


@dataclass(frozen=True)
class Lowering:
    onnx_op: str
    tflite_ops: tuple[str, ...]  # common case, in emission order; () = folded away or an alias
    source: str
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    const_operands: dict[int, int] = field(default_factory=dict)
    fails: str = ""  # why conversion fails for every instance of this op
    hint: str = ""
    fails_when: tuple[tuple[str, str], ...] = ()  # (condition, reason) that make conversion fail
    static_operands: tuple[int, ...] = ()  # ONNX inputs onnx2tf must know at conversion time (axes, sizes, weights)
    fails_quantized: tuple[tuple[str, str], ...] = ()  # (condition, reason) that fail int8/int16x8 conversion only
    # Of static_operands, those onnx2tf reads off the node's static output shape instead (Reshape's shape,
    # Resize's scales/sizes) in float32; in int8 the converter's calibration then fails on them.
    shape_operands: tuple[int, ...] = ()
    output_dtype: str = ""  # the type the (first) TFLite op writes, when onnx2tf fixes it whatever the inputs


def _l(op: str, ops: tuple[str, ...] | str = (), **kw) -> Lowering:
    ops = (ops,) if isinstance(ops, str) else tuple(ops)
    return Lowering(op, ops, f"onnx2tf/ops/{op}.py", **kw)


# Ops TensorFlow 2.19's converter has no int8 TFLite kernel for: in an int8 model it keeps them in
# float32 between DEQUANTIZE and QUANTIZE (seen in bench/check_accuracy.py: CEIL, FLOOR, SIN, SQRT; COS and
# ROUND share their float-only TFLite kernels). EXP, by contrast, becomes an int8 EXP that TFLM refuses.
FLOAT_FALLBACK = frozenset({"CEIL", "FLOOR", "SIN", "COS", "SQRT", "ROUND", "FLOOR_MOD", "SQUARE"})
# "OP@float32" in a lowering: the op runs on that type whatever the node's inputs are.

# ONNX ops whose onnx2tf converter casts int8/int16/int32/int64 inputs to float32 first ("TFLite does not
# support TrueDiv(INT)", Div.py), so a raw int8/int16 model input that only feeds them converts.
CASTS_INTEGER_INPUTS = frozenset({"Div", "Identity"})  # Identity: no TFLite op at all (clip_default_int8_inbounds_expanded)
# ONNX ops an int16 model input was seen converting into (mul_int16, div_int16, mod_mixed_sign_int16,
# equal_int16, less_int16); greater_int16, min_int16 and greater_equal_int16 stop the TFLite converter.
CONVERTS_INT16_INPUTS = frozenset({"Div", "Mul", "Mod", "Equal", "Less"})
# Tensor types onnx2tf 1.29.24 has no TensorFlow type for (utils/enums.py ONNX_DTYPES_TO_TF_DTYPES):
# KeyError 16 (bfloat16) and 17-24 (float8, int4/uint4, float4) in the node tests.
UNMAPPED_TYPES = frozenset({"bfloat16", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "uint4",
                            "int4", "float4_e2m1fn", "float8_e8m0fnu"})

_FLEX = "{tf} has no TFLite builtin, so the model needs a Flex op, which TFLM does not have"


def _flex(op: str, tf_op: str, hint: str) -> Lowering:
    return _l(op, (f"FlexOp:{tf_op}",), fails=_FLEX.format(tf=tf_op), hint=hint)


_BOOL_BCAST = "onnx2tf 1.29.24 fails to broadcast tensors of different ranks (3-D and up) in logical and comparison ops"
_BCAST_INT8 = ("in int8, the TFLite converter fails calibrating onnx2tf's broadcast between two model inputs of "
               "different ranks (reshape.cc/transpose.cc prepare errors in add_bcast, sub_bcast, div_bcast, "
               "mod_broadcast)")
_RESHAPE_INT8 = ("in int8, the TFLite converter fails calibrating onnx2tf's reshapes of several 3-D or larger model "
                 "inputs (laid out channels-last) to 2-D with a leading dimension over 1 (the LayerNormalization "
                 "expansions in the node tests; in float32 the same graphs give wrong numbers)")
_LAST_INDEX = "onnx2tf 1.29.24's select_last_index path (tf.reverse with a scalar axis) fails"
_EMPTY_OPTIONAL = "onnx2tf 1.29.24 fails on Clip with an empty optional min/max input"

_ROWS = [
    # Element-wise maths
    _l("Abs", "ABS"),
    _l("Add", "ADD", fails_quantized=(("rank_broadcast_inputs", _BCAST_INT8),)),
    _l("Sub", "SUB", fails_quantized=(("rank_broadcast_inputs", _BCAST_INT8),)),
    _l("Mul", "MUL", fails_quantized=(("rank_broadcast_inputs", _BCAST_INT8),)),
    _l("Div", "DIV", variants=(("integer_inputs", ("CAST", "DIV@float32", "CAST")),),
       fails_quantized=(("rank_broadcast_inputs", _BCAST_INT8),)),
    # fmod=1 is converted too, as FLOOR_MOD (floor semantics: results differ for mixed signs, seen in
    # the node tests: mod_mixed_sign_float32 runs with wrong numbers).
    _l("Mod", "FLOOR_MOD", fails_quantized=(("rank_broadcast_inputs", _BCAST_INT8),)),
    _l("Neg", "NEG"),
    _l("Reciprocal", "DIV"),
    _l("Sqrt", "SQRT"),
    _l("Exp", "EXP"),
    _l("Log", "LOG"),
    _l("Sin", "SIN"),
    _l("Cos", "COS"),
    _l("Ceil", "CEIL"),
    _l("Floor", "FLOOR"),
    _l("Round", "ROUND"),
    _l("Sign", "SIGN"),
    # Exponent -0.5: onnx2tf writes tf.pow, which the TFLite converter turns into RSQRT (seen in the LayerNorm,
    # RMSNorm and torch x * ms.pow(-0.5) conversions, 3-D and 4-D, int8 and int16x8).
    _l("Pow", "POW", variants=(("exponent_2_or_3", ("MUL",)), ("exponent_minus_half", ("RSQRT",))),
       hint="use a constant exponent of 2 or 3 (becomes MUL), or exp(y*log(x))"),
    _l("Max", "MAXIMUM"),
    _l("Min", "MINIMUM"),
    _l("Sum", "ADD_N", variants=(("single_input", ()), ("two_inputs", ("ADD",)))),
    _l("Mean", ("ADD", "MUL"), variants=(("single_input", ()),)),
    _l("Equal", "EQUAL", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("Greater", "GREATER", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("GreaterOrEqual", "GREATER_EQUAL", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("Less", "LESS", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("LessOrEqual", "LESS_EQUAL", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("And", "LOGICAL_AND", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("Or", "LOGICAL_OR", fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("Not", "LOGICAL_NOT"),
    _l("Xor", ("LOGICAL_OR", "LOGICAL_AND", "LOGICAL_NOT"), fails_when=(("rank_broadcast", _BOOL_BCAST),)),
    _l("Where", "SELECT_V2", variants=(("same_shapes", ("SELECT",)),)),
    # A cast to float64 that is a model output leaves no operator: the .tflite output is the input tensor
    # (cast_FLOAT_to_DOUBLE runs); anywhere else TFLM would need a float64 CAST.
    _l("Cast", "CAST", variants=(("same_type_cast", ()), ("float64_graph_output", ()))),
    _l("Identity", ()),
    _l("Dropout", ()),
    # Activations
    _l("Relu", "RELU"),
    _l("LeakyRelu", "LEAKY_RELU"),
    _l("PRelu", "PRELU"),
    _l("Sigmoid", "LOGISTIC"),
    _l("Tanh", "TANH"),
    # alpha != 1: tf.cast(x < 0) * alpha * (tf.exp(x) - 1) + tf.cast(x >= 0) * x (Elu.py); alpha 1: tf.nn.elu.
    _l("Elu", "ELU", variants=(("elu_alpha_not_1", ("LESS", "CAST", "EXP", "SUB", "MUL", "GREATER_EQUAL", "ADD")),)),
    _l("Selu", ("ELU", "GREATER", "MUL", "SELECT")),
    _l("Celu", ("EXP", "MAXIMUM", "MINIMUM", "ADD", "MUL")),
    _l("Softplus", ("EXP", "LOG", "ADD")),
    # softsign and softsign_example both stop the TFLite converter (tf.nn.softsign does not legalise to builtins).
    _l("Softsign", ("ABS", "ADD", "DIV"), fails="the TFLite converter cannot legalise onnx2tf's tf.nn.softsign to "
       "builtins", hint="write it as x / (1 + abs(x)) (ABS, ADD, DIV)"),
    _l("HardSigmoid", ("MUL", "ADD", "RELU_0_TO_1")),
    _l("HardSwish", "HARD_SWISH"),
    _l("Mish", ("EXP", "LOG", "ADD", "TANH", "MUL")),
    _l("Gelu", "GELU"),
    _l("ThresholdedRelu", ("SUB", "RELU", "SIGN", "MUL"), hint="use Where(x > alpha, x, 0) with a broadcast shape"),
    _l("Clip", ("MAXIMUM", "MINIMUM"), fails_when=(("empty_optional_input", _EMPTY_OPTIONAL),), variants=(("clip_relu6", ("RELU6",)), ("clip_relu", ("RELU",)),
                                                ("clip_min_only", ("MAXIMUM",)), ("clip_max_only", ("MINIMUM",)),
                                                ("clip_none", ()))),
    _l("Softmax", "SOFTMAX", variants=(("softmax_not_last_axis", ("TRANSPOSE", "SOFTMAX", "TRANSPOSE")),)),
    _l("LogSoftmax", "LOG_SOFTMAX", variants=(("softmax_not_last_axis", ("TRANSPOSE", "LOG_SOFTMAX", "TRANSPOSE")),)),
    _l("Hardmax", ("ARG_MAX", "ONE_HOT"), hint="use ArgMax and compare with a constant arange"),
    _l("Shrink", ("LESS", "GREATER", "SELECT", "ADD", "SUB"), hint="use Where with broadcast shapes (SELECT_V2)"),
    # Convolution, pooling, dense
    _l("Conv", "CONV_2D", variants=(("conv3d", ("CONV_3D",)), ("depthwise", ("DEPTHWISE_CONV_2D",)),
                                    ("conv1d", ("EXPAND_DIMS", "CONV_2D", "SQUEEZE"))),
       const_operands={1: 1}),
    _l("ConvTranspose", "TRANSPOSE_CONV", variants=(("conv3d", ("CONV_3D_TRANSPOSE",)),),
       const_operands={1: 1}),
    _l("AveragePool", "AVERAGE_POOL_2D", variants=(("pool3d", ("FlexOp:AvgPool3D",)),)),
    _l("MaxPool", "MAX_POOL_2D",
       variants=(("pool3d", ("FlexOp:MaxPool3D",)), ("maxpool_min_pad", ("PADV2", "MAX_POOL_2D"))),
       fails_when=(("maxpool_indices", "MaxPool's Indices output needs tf.nn.max_pool_with_argmax, a Flex op"),
                   ("dilated", "the TFLite converter fails on onnx2tf's dilated MaxPool (maxpool_2d_dilations)")),
       fails_quantized=(("maxpool_min_pad_computed", "onnx2tf pads this MaxPool (padding other than TensorFlow's SAME) with "
                         "float32's lowest value, -3.4e38 (PADV2); quantized, that constant gives the pool's input a "
                         "scale near 1e36, so its values all round to the zero point, and TFLM's int8 ADD/SUB reading "
                         "the pool aborts the program in Prepare (add_common.cc: rescale multiplier >= 1)"),),
       hint="put a ReLU right before the pool (hub then pads with 0), use SAME-style padding, or --quantize float32"),
    _l("GlobalAveragePool", "MEAN"),
    _l("GlobalMaxPool", "REDUCE_MAX"),
    # p=2: sqrt(avg_pool(x*x) * n) (ABS, MUL, AVERAGE_POOL_2D, SQRT run); other p need POW; 3-D stops the converter.
    _l("LpPool", ("ABS", "POW", "AVERAGE_POOL_2D", "MUL", "POW"), variants=(("lp_p2", ("ABS", "MUL", "AVERAGE_POOL_2D",
                                                                                      "MUL", "SQRT")),),
       fails_when=(("pool3d", "the TFLite converter fails on onnx2tf's 3-D LpPool"),), hint="use p=2, AveragePool or MaxPool"),
    _l("GlobalLpPool", ("MUL", "SUM", "SQRT")),
    _l("Gemm", "FULLY_CONNECTED", variants=(("gemm_non_const_b", ("BATCH_MATMUL", "ADD")),)),
    _l("MatMul", "BATCH_MATMUL", variants=(("matmul_const_2d_rhs", ("FULLY_CONNECTED",)),)),
    _l("BatchNormalization", ("MUL", "ADD")),
    _l("InstanceNormalization", ("MEAN", "SQUARED_DIFFERENCE", "ADD", "RSQRT", "MUL", "SUB")),
    # RMSNormalization.py: x * rsqrt(mean(x^2) + eps) * scale; int8 keeps SQUARE in float32 (seen).
    _l("RMSNormalization", ("SQUARE", "MEAN", "ADD", "RSQRT", "MUL"),
       fails_when=(("scale_lower_rank", "onnx2tf 1.29.24 multiplies the channels-last input by a lower-rank scale "
                                        "without re-laying it out, and stops (rms_normalization node tests)"),)),
    _l("LayerNormalization", ("MEAN", "SQUARED_DIFFERENCE", "ADD", "RSQRT", "MUL", "SUB"),
       fails="onnx2tf 1.29.24 calls a TF function on symbolic Keras tensors here and stops"),
    _l("GroupNormalization", ("RESHAPE", "MEAN", "SQUARED_DIFFERENCE", "ADD", "RSQRT", "MUL", "SUB")),
    _l("MeanVarianceNormalization", ("MEAN", "SQUARED_DIFFERENCE", "SQRT", "SUB", "DIV")),
    # LpNormalization.py p=2: x * rsqrt(sum(x^2)) (MUL, SUM, RSQRT seen); int8 over axis 0 crashes the converter.
    _l("LpNormalization", ("MUL", "SUM", "RSQRT", "MUL"), variants=(("lp_norm_l1", ("ABS", "SUM", "DIV")),),
       fails_quantized=(("l2_axis_0", "the TFLite converter crashed (segfault) quantizing L2 LpNormalization over axis 0 "
                                   "(l2normalization_axis_0)"),)),
    _l("LRN", "LOCAL_RESPONSE_NORMALIZATION", hint="else replace LRN with BatchNorm, or drop it"),
    # Reductions
    _l("ReduceMean", "MEAN"),
    _l("ReduceSum", "SUM"),
    _l("ReduceMax", "REDUCE_MAX"),
    _l("ReduceMin", "REDUCE_MIN"),
    _l("ReduceProd", "REDUCE_PROD", hint="use exp(sum(log(x))) in float32"),
    _l("ReduceL1", ("ABS", "SUM")),
    _l("ReduceL2", ("MUL", "SUM", "SQRT")),
    _l("ReduceSumSquare", ("MUL", "SUM")),
    _l("ReduceLogSum", ("SUM", "LOG")),
    _l("ReduceLogSumExp", ("REDUCE_MAX", "SUB", "EXP", "SUM", "LOG", "ADD")),
    # tf.math.argmax/argmin(output_type=<the ONNX output's dtype>), which ONNX fixes to int64; hub's
    # argmax_int32 flatbuffer pass retypes it to int32 when the indices only reach reshapes and outputs.
    _l("ArgMax", "ARG_MAX", fails_when=(("select_last_index", _LAST_INDEX),), output_dtype="int64",
       hint="return the indices as a model output (hub has ARG_MAX write int32 then), or take the argmax on the host"),
    _l("ArgMin", "ARG_MIN", fails_when=(("select_last_index", _LAST_INDEX),), output_dtype="int64",
       hint="return the indices as a model output (hub has ARG_MIN write int32 then), or take the argmin on the host"),
    _l("CumSum", "CUMSUM"),
    _l("TopK", "TOPK_V2", hint="do other k on the host"),
    # Shape and data movement
    _l("Reshape", "RESHAPE", shape_operands=(1,),
       fails_quantized=(("reshape_nd_input_keeps_leading_dim", _RESHAPE_INT8),)),
    _l("Flatten", "RESHAPE", fails_quantized=(("reshape_nd_input_keeps_leading_dim", _RESHAPE_INT8),)),
    _l("Squeeze", "SQUEEZE"),
    _l("Unsqueeze", "RESHAPE"),
    _l("Transpose", "TRANSPOSE", variants=(("identity_perm", ()),)),
    _l("Concat", "CONCATENATION", variants=(("single_input", ()),)),
    _l("Split", "SPLIT", variants=(("uneven_split", ("SPLIT_V",)),),
       fails_when=(("split_num_outputs_uneven", "onnx2tf 1.29.24 fails on Split(num_outputs) of an uneven size"),)),
    _l("Slice", "STRIDED_SLICE", const_operands={1: 1, 2: 2}),
    _l("Gather", "GATHER", variants=(("scalar_const_index", ("STRIDED_SLICE", "RESHAPE")),)),
    _l("GatherND", "GATHER_ND"),
    _l("GatherElements", ("GATHER_ND",), hint="use Gather on a flattened tensor"),
    _l("Pad", "PAD", variants=(("pad_reflect", ("MIRROR_PAD",)), ("pad_edge", ("FlexOp:edge pad",)),
                               ("pad_constant_value", ("PADV2",))),
       const_operands={1: 1}),
    _l("Expand", "BROADCAST_TO", variants=(("expand_is_noop", ()),)),
    _l("Tile", "TILE", hint="use BROADCAST_TO (Expand), or concatenate copies"),
    _l("DepthToSpace", "DEPTH_TO_SPACE", variants=(("crd_mode", ("RESHAPE", "TRANSPOSE", "RESHAPE")),),
       fails_when=(("crd_mode", "onnx2tf's CRD DepthToSpace reshapes to 6-D and transposes that; TFLM's TRANSPOSE "
                                "takes at most 5-D (transpose.cc), so allocation fails"),),
       hint="export DepthToSpace in DCR mode (PixelShuffle-like layers can be exported that way)"),
    _l("SpaceToDepth", "SPACE_TO_DEPTH"),
    _l("Resize", "RESIZE_BILINEAR", variants=(("resize_nearest", ("RESIZE_NEAREST_NEIGHBOR",)),
                                              ("resize_cubic", ("FlexOp:ResizeBicubic",))),
       const_operands={2: 1, 3: 1}, shape_operands=(2, 3),
       fails_when=(("resize_antialias", "onnx2tf 1.29.24 fails on Resize(antialias=1)"),)),
    _l("Upsample", "RESIZE_NEAREST_NEIGHBOR", variants=(("resize_linear", ("RESIZE_BILINEAR",)),)),
    _l("Shape", (), hint="shapes are static after hub's normalisation",
       fails_when=(("shape_clip", "onnx2tf 1.29.24 indexes Shape's start/end without clipping them to the rank"),)),
    _l("Size", ()),
    _l("Constant", ()),
    _l("ConstantOfShape", "FILL"),
    _l("EyeLike", (), fails="onnx2tf 1.29.24 calls tf.shape on a symbolic Keras tensor here and stops (a constant "
                          "input is folded by hub normalise instead)", hint="make EyeLike's input a constant"),
    _l("Range", "RANGE", hint="make the range a constant tensor"),
    _l("OneHot", "ONE_HOT", hint="compare indices with a constant arange (EQUAL) and cast"),
    _l("NonZero", "WHERE", hint="use a fixed-size mask with Where(cond, x, y)"),
    _l("Compress", "WHERE", hint="use a fixed-size mask"),
    _l("ScatterND", "SCATTER_ND", hint="express the update as a mask and Where"),
    _l("ScatterElements", "SCATTER_ND", hint="express the update as a mask and Where"),
    _l("Scatter", "SCATTER_ND", hint="express the update as a mask and Where"),
    _l("Trilu", ("MUL",)),
    _l("ReverseSequence", "REVERSE_SEQUENCE", hint="use Slice and Concat per sequence"),
    _l("Einsum", "EINSUM", fails="tf.einsum becomes a Flex op in most equations",
       hint="rewrite the Einsum as MatMul/Transpose"),
    # Recurrent
    _l("LSTM", ("FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL", "ADD", "CONCATENATION", "SPLIT")),
    _l("GRU", ("FULLY_CONNECTED", "LOGISTIC", "TANH", "MUL", "ADD", "SUB", "SPLIT")),
    _l("RNN", ("FULLY_CONNECTED", "TANH", "ADD")),
    # Quantization nodes (QDQ models)
    # block_size > 0 (blocked quantization) repeats the scales with TILE, which TFLM lacks (seen).
    _l("QuantizeLinear", ("QUANTIZE",), variants=(("blocked", ("TILE", "DIV", "ROUND", "MAXIMUM", "MINIMUM")),)),
    _l("DequantizeLinear", ("DEQUANTIZE",), variants=(("blocked", ("TILE", "SUB", "MUL")),)),
    _l("DynamicQuantizeLinear", ("REDUCE_MAX", "REDUCE_MIN", "DIV", "ROUND", "ADD")),
    # No builtin: the converter needs Flex ops
    _flex("Acos", "tf.math.acos", "approximate acos with a polynomial"),
    _flex("Acosh", "tf.math.acosh", "use log(x + sqrt(x*x - 1))"),
    _flex("Asin", "tf.math.asin", "approximate asin with a polynomial"),
    _flex("Asinh", "tf.math.asinh", "use log(x + sqrt(x*x + 1))"),
    _flex("Atan", "tf.math.atan", "approximate atan with a polynomial"),
    _flex("Atanh", "tf.math.atanh", "use 0.5*log((1+x)/(1-x))"),
    _flex("Cosh", "tf.math.cosh", "use 0.5*(exp(x)+exp(-x))"),
    _flex("Sinh", "tf.math.sinh", "use 0.5*(exp(x)-exp(-x))"),
    _flex("Tan", "tf.math.tan", "use sin(x)/cos(x)"),
    _flex("Erf", "tf.math.erf", ""),
    _flex("CumProd", "tf.math.cumprod", "use exp(cumsum(log(x)))"),
    _flex("Det", "tf.linalg.det", "compute the determinant on the host"),
    # The converter lowers tf.math.is_inf/is_nan to ABS+EQUAL / NOT_EQUAL (isinf, isnan and their float16
    # tests run); one-sided IsInf (detect_positive/negative=0) fails on a dtype check; int8 crashes the converter.
    _l("IsInf", ("ABS", "EQUAL"),
       fails_when=(("isinf_one_sided", "onnx2tf 1.29.24 fails on a one-sided IsInf (detect_positive or "
                                       "detect_negative 0)"),),
       fails_quantized=(("always", "the TFLite converter crashed converting IsInf in int8 (isinf, isinf_float16)"),),
       hint="compare abs(x) with the largest finite value in float32"),
    # IsNaN read inside the graph converts in int8: the dynamo exporter's attention guard Where(IsNaN(x), 0, x)
    # in a DeiT (bench/results/model_hub.md); its bool result as a model output crashes the converter.
    _l("IsNaN", ("NOT_EQUAL",),
       fails_quantized=(("graph_output", "the TFLite converter crashed converting IsNaN in int8 when its bool result "
                                         "is a model output (isnan, isnan_float16)"),),
       hint="use x != x (NOT_EQUAL) in float32"),
    _flex("Unique", "tf.unique", "do it on the host"),
    _flex("DFT", "tf.signal.rfft", "use TFLM's SignalRfft custom op"),
    _flex("STFT", "tf.signal.stft", "compute the spectrogram with TFLM's Signal ops"),
    _flex("Bernoulli", "tf.random", "feed random numbers as an input"),
    _flex("RandomNormal", "tf.random.normal", "feed random numbers as an input"),
    _flex("RandomNormalLike", "tf.random.normal", "feed random numbers as an input"),
    _flex("RandomUniform", "tf.random.uniform", "feed random numbers as an input"),
    _flex("RandomUniformLike", "tf.random.uniform", "feed random numbers as an input"),
    _flex("Multinomial", "tf.random.categorical", "sample on the host"),
    _flex("BitShift", "tf.bitwise.shift", "use integer MUL/DIV by powers of two"),
    _flex("BitwiseAnd", "tf.bitwise.bitwise_and", "use logical ops on bool tensors"),
    _flex("BitwiseOr", "tf.bitwise.bitwise_or", "use logical ops on bool tensors"),
    _flex("BitwiseXor", "tf.bitwise.bitwise_xor", "use logical ops on bool tensors"),
    _flex("BitwiseNot", "tf.bitwise.invert", "use logical ops on bool tensors"),
    _flex("Loop", "tf.while_loop", "unroll the loop at export time"),
    _flex("Scan", "tf.while_loop", "unroll the scan at export time"),
    _flex("If", "tf.cond", "export one branch, or compute both and Where"),
    _flex("MaxRoiPool", "tf.map_fn", "do ROI pooling on the host"),
    _flex("RoiAlign", "tf.image.crop_and_resize", "do ROI align on the host"),
    _flex("NonMaxSuppression", "tf.image.non_max_suppression", "run NMS on the host, or use TFLite_Detection_PostProcess"),
    # GridSample.py: 4-D linear/nearest/cubic gather through a flattened GATHER (builtins only; cubic adds
    # SELECT, which TFLM lacks); 5-D (volumetric) fails in onnx2tf; int8 fails in the converter's
    # calibration ("split.cc Not an even split"), all seen in the node tests.
    _l("GridSample", ("RESHAPE", "SPLIT", "MUL", "ADD", "SUB", "FLOOR", "CAST", "MAXIMUM", "MINIMUM", "RELU", "PAD",
                      "GATHER"),
       variants=(("resize_cubic", ("RESHAPE", "SPLIT", "MUL", "ADD", "SUB", "FLOOR", "CAST", "ABS", "LESS", "SELECT",
                                   "GATHER")),),
       fails_when=(("pool3d", "onnx2tf 1.29.24 fails on 5-D (volumetric) GridSample"),),
       fails_quantized=(("always", "the TFLite converter fails calibrating onnx2tf's int8 GridSample (SPLIT: not an "
                                   "even split)"),),
       hint="precompute the sampling grid as a constant Gather, or convert with --quantize float32"),
    _flex("AffineGrid", "tf.meshgrid", "precompute the grid as a constant"),
    _flex("DeformConv", "tf.gather", "use a plain Conv"),
    _flex("Col2Im", "tf.nn.conv2d_transpose", "use ConvTranspose"),
    _flex("CenterCropPad", "tf.tensor_scatter_nd_update", "use Slice or Pad with constant sizes"),
    _flex("MaxUnpool", "tf.scatter_nd", "use Resize(nearest) and a mask"),
    _flex("Inverse", "tf.linalg.inv", "invert on the host"),
    _flex("StringNormalizer", "strings", "do text processing on the host"),
    _flex("RegexFullMatch", "strings", "do text processing on the host"),
    _flex("StringConcat", "strings", "do text processing on the host"),
    _flex("StringSplit", "strings", "do text processing on the host"),
    _flex("TfIdfVectorizer", "tf.numpy_function", "do text processing on the host"),
    _flex("ImageDecoder", "tf.numpy_function", "decode images on the host"),
    _flex("HammingWindow", "tf.signal.hamming_window", "pass the window as a constant"),
    _flex("HannWindow", "tf.signal.hann_window", "pass the window as a constant"),
    _flex("BlackmanWindow", "tf.range", "pass the window as a constant"),
    _flex("MelWeightMatrix", "tf.signal.linear_to_mel_weight_matrix", "pass the matrix as a constant"),
    _flex("NegativeLogLikelihoodLoss", "tf.one_hot", "compute losses outside the model"),
    _flex("SoftmaxCrossEntropyLoss", "tf.one_hot", "compute losses outside the model"),
    _flex("SequenceAt", "sequence", "use tensors instead of sequences"),
    _flex("SequenceConstruct", "sequence", "use tensors instead of sequences"),
    _flex("SequenceEmpty", "sequence", "use tensors instead of sequences"),
    _flex("SequenceErase", "sequence", "use tensors instead of sequences"),
    _flex("SequenceInsert", "sequence", "use tensors instead of sequences"),
    _flex("SequenceLength", "sequence", "use tensors instead of sequences"),
    _flex("SplitToSequence", "sequence", "use Split"),
    _flex("ConcatFromSequence", "tf.while_loop", "use Concat"),
    _flex("Optional", "optional", "remove optional values"),
    _flex("OptionalGetElement", "optional", "remove optional values"),
    _flex("OptionalHasElement", "optional", "remove optional values"),
]
# Inputs onnx2tf reads as numbers while building the graph: run-time tensors there make it fail
# (seen in the node tests, where axes, sizes, bounds and weights are graph inputs).
_STATIC = {
    **{op: (1,) for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                           "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp", "Split", "Squeeze", "Unsqueeze",
                           "CumSum", "Reshape", "Expand", "Tile", "TopK", "OneHot", "ConvTranspose")},
    "Conv": (1,),  # the weights (conv_with_strides_no_padding: W as a graph input -> IndexError)
    "Clip": (1, 2), "Dropout": (1, 2), "Pad": (1, 2, 3), "Slice": (1, 2, 3, 4), "Resize": (1, 2, 3),
    "ConstantOfShape": (0,), "RNN": (1, 2, 3), "GRU": (1, 2, 3), "LSTM": (1, 2, 3),
    "InstanceNormalization": (1, 2),  # instancenorm_example: scale/bias as graph inputs stop onnx2tf
    "GroupNormalization": (1, 2),  # group_normalization_example/epsilon: the same
}
_ROWS = [replace(r, static_operands=_STATIC.get(r.onnx_op, ())) for r in _ROWS]

# Trained weights onnx2tf turns into constant TFLite tensors (quantized with the op in int8): computed
# at run time instead, they become activations, and an int8 Conv or Gemm then has no int8 weights.
# The light model-zoo files build every one of them with ConstantOfShape.
WEIGHT_OPERANDS: dict[str, tuple[int, ...]] = {
    "Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "PRelu": (1,),
    "BatchNormalization": (1, 2, 3, 4), "InstanceNormalization": (1, 2), "LayerNormalization": (1, 2),
    "GroupNormalization": (1, 2),
}
LOWERINGS: dict[str, Lowering] = {row.onnx_op: row for row in _ROWS}


def lowering(op: str) -> Lowering | None:
    return LOWERINGS.get(op)


def needs_constant(op: str, index: int) -> bool:
    """Must ONNX input `index` of `op` be known when converting (a weight, axes, a size)?"""
    row = LOWERINGS.get(op)
    return index in WEIGHT_OPERANDS.get(op, ()) or (row is not None and index in row.static_operands)


def maxpool_explicit_pads(hw: tuple[int, int], kernel: list[int], strides: list[int], pads: list[int],
                          ceil_mode: bool = False, auto_pad: str = "NOTSET") -> list[int]:
    """The ONNX-style pads [top, left, bottom, right] onnx2tf writes as a tf.pad before a 2-D MaxPool
    (all zero: none), read from onnx2tf/ops/MaxPool.py. Pads equal to TensorFlow's SAME padding become
    padding="SAME"; any other padding, and ceil_mode's extra end padding, is a tf.pad whose constant is
    float32's lowest value (-3.4e38) unless onnx2tf itself writes the int8 files (-oiqt, not hub's path):
    TFLite PADV2, and int8 calibration then spans [-3.4e38, max] on the pool's input."""
    if auto_pad in ("SAME_UPPER", "VALID"):
        return [0, 0, 0, 0]
    same = _same_pads(hw, kernel, strides)
    if auto_pad == "SAME_LOWER":
        return same[2:] + same[:2]
    if any(pads) and pads == same:
        return [0, 0, 0, 0]
    extra = _ceil_extra_pads(hw, kernel, strides, pads) if ceil_mode else [0, 0]
    return pads[:2] + [p + max(e, 0) for p, e in zip(pads[2:], extra)]


def conv_writes_pad(in_hw: tuple[int, ...], out_hw: tuple[int, ...], pads: list[int], auto_pad: str = "NOTSET") -> bool:
    """Does onnx2tf put a PAD op before this Conv? (onnx2tf/ops/Conv.py) With auto_pad NOTSET it takes
    padding="SAME" only when the pads are symmetric and the output keeps the input's size (stride 1);
    any other non-zero pads become a tf.pad and a VALID conv: TFLite PAD + CONV_2D. auto_pad SAME_UPPER
    is TensorFlow's SAME (the odd pixel at the end), with no PAD."""
    if auto_pad != "NOTSET" or not any(pads):
        return False
    half = len(pads) // 2
    return not (pads[:half] == pads[half:] and tuple(in_hw) == tuple(out_hw))


def _same_pads(hw: tuple[int, int], kernel: list[int], strides: list[int]) -> list[int]:
    """calc_tf_pooling_pads in onnx2tf/utils/common_functions.py (dilation 1)."""
    total = [max((-(-i // s) - 1) * s + k - i, 0) for i, k, s in zip(hw, kernel, strides)]
    return [t // 2 for t in total] + [t - t // 2 for t in total]


def _ceil_extra_pads(hw: tuple[int, int], kernel: list[int], strides: list[int], pads: list[int]) -> list[int]:
    """calc_extra_padding_with_ceil in onnx2tf/utils/common_functions.py (dilation 1)."""
    extra = []
    for i, k, s, begin, end in zip(hw, kernel, strides, pads[:2], pads[2:]):
        last_start = (-(-(i + begin + end - k) // s)) * s
        extra.append(last_start + k - (i + begin + end) if last_start < i + begin else 0)
    return extra
