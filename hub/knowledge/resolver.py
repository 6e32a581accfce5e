"""How firmware registers TFLM's kernels: MicroMutableOpResolver's Add* methods, and TFLM's custom ops.

Read from tensorflow/lite/micro/micro_mutable_op_resolver.h at the commit
hub.knowledge.tflm_kernels.TFLM_VERSION names (90b983c2b3f1480642e040bbd2ddb37b998f3424): every
`TfLiteStatus AddX(...) { return AddBuiltin(BuiltinOperator_Y, ...` pair (100 builtins) and every
`AddCustom("<code>", ...)` call. A builtin missing from BUILTIN_ADDERS has no TFLM kernel, and so no row
in tflm_kernels.KERNELS (tests/test_knowledge.py holds the two tables to the same ops).
"""
from __future__ import annotations

from dataclasses import dataclass

BUILTIN_ADDERS: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax",
    "ARG_MIN": "AddArgMin", "ASSIGN_VARIABLE": "AddAssignVariable",
    "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs",
    "BROADCAST_TO": "AddBroadcastTo", "CALL_ONCE": "AddCallOnce", "CAST": "AddCast",
    "CEIL": "AddCeil", "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D",
    "COS": "AddCos", "CUMSUM": "AddCumSum", "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D",
    "DEPTH_TO_SPACE": "AddDepthToSpace", "DEQUANTIZE": "AddDequantize", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "ELU": "AddElu",
    "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "EQUAL": "AddEqual", "EXP": "AddExp",
    "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod",
    "FULLY_CONNECTED": "AddFullyConnected", "GATHER": "AddGather", "GATHER_ND": "AddGatherNd",
    "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual", "HARD_SWISH": "AddHardSwish",
    "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization", "L2_POOL_2D": "AddL2Pool2D",
    "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot",
    "LOGICAL_OR": "AddLogicalOr", "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax",
    "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D", "MEAN": "AddMean",
    "MINIMUM": "AddMinimum", "MIRROR_PAD": "AddMirrorPad", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2",
    "PRELU": "AddPrelu", "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable",
    "REDUCE_ALL": "AddReduceAll", "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin",
    "RELU": "AddRelu", "RELU6": "AddRelu6", "RESHAPE": "AddReshape",
    "RESIZE_BILINEAR": "AddResizeBilinear", "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor",
    "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound", "RSQRT": "AddRsqrt",
    "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd",
    "SPACE_TO_DEPTH": "AddSpaceToDepth", "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV",
    "SQRT": "AddSqrt", "SQUARE": "AddSquare", "SQUARED_DIFFERENCE": "AddSquaredDifference",
    "SQUEEZE": "AddSqueeze", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE": "AddTranspose",
    "TRANSPOSE_CONV": "AddTransposeConv",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "UNPACK": "AddUnpack",
    "VAR_HANDLE": "AddVarHandle", "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}


@dataclass(frozen=True)
class CustomOp:
    """A custom op code TFLM's resolver can register, and what a build needs before it runs."""

    code: str  # the operator code's custom_code in the flatbuffer
    adder: str  # the MicroMutableOpResolver method
    source: str  # kernel file in tflite-micro
    # None: the reference kernels (and the pip interpreter) have it. Otherwise what firmware needs,
    # and the fact that the host interpreter cannot run it, so `hub check` cannot say "will run".
    needs: str | None = None
    hint: str = ""  # what to do about `needs`


def _signal(code: str, adder: str, source: str) -> CustomOp:
    return CustomOp(code, adder, f"signal/micro/kernels/{source}")


_CUSTOM = [
    CustomOp("CIRCULAR_BUFFER", "AddCircularBuffer", "tensorflow/lite/micro/kernels/circular_buffer.cc"),
    # Inserted by tflite_micro.compression before a compressed tensor's consumer (docs/compression.md).
    CustomOp("TFLM_DECODE", "AddDecode", "tensorflow/lite/micro/kernels/decode.cc"),
    CustomOp("TFLite_Detection_PostProcess", "AddDetectionPostprocess",
             "tensorflow/lite/micro/kernels/detection_postprocess.cc"),
    # Vela's output: the whole graph (or parts of it) as one command stream for Arm's Ethos-U NPU.
    # kernels/ethosu.cc is a stub (Register_ETHOSU() returns nullptr, GetString_ETHOSU() ""), so AddEthosU
    # registers nothing unless the build takes kernels/ethos_u/ethosu.cc (make CO_PROCESSOR=ethos_u, see
    # kernels/ethos_u/README.md) and links Arm's Ethos-U core driver; its code is "ethos-u" (ethosu.cc:171).
    CustomOp("ethos-u", "AddEthosU", "tensorflow/lite/micro/kernels/ethos_u/ethosu.cc",
             needs="TFLM built with the Ethos-U kernel (CO_PROCESSOR=ethos_u), Arm's Ethos-U driver and an "
             "Ethos-U NPU; the host interpreter and a plain Cortex-M build cannot run it",
             hint="run it on an Ethos-U board (`hub check --target ethos-u` says what runs on the NPU), or give "
             "hub the model before Vela compiled it (`hub convert --target ethos-u` verifies that one on TFLM)"),
    _signal("SignalDelay", "AddDelay", "delay.cc"),
    _signal("SignalEnergy", "AddEnergy", "energy.cc"),
    _signal("SignalFftAutoScale", "AddFftAutoScale", "fft_auto_scale_kernel.cc"),
    _signal("SignalFilterBank", "AddFilterBank", "filter_bank.cc"),
    _signal("SignalFilterBankLog", "AddFilterBankLog", "filter_bank_log.cc"),
    _signal("SignalFilterBankSquareRoot", "AddFilterBankSquareRoot", "filter_bank_square_root.cc"),
    _signal("SignalFilterBankSpectralSubtraction", "AddFilterBankSpectralSubtraction",
            "filter_bank_spectral_subtraction.cc"),
    _signal("SignalFramer", "AddFramer", "framer.cc"),
    _signal("SignalIrfft", "AddIrfft", "irfft.cc"),
    _signal("SignalOverlapAdd", "AddOverlapAdd", "overlap_add.cc"),
    _signal("SignalPCAN", "AddPCAN", "pcan.cc"),
    _signal("SignalRfft", "AddRfft", "rfft.cc"),
    _signal("SignalStacker", "AddStacker", "stacker.cc"),
    _signal("SignalWindow", "AddWindow", "window.cc"),
]
CUSTOM_OPS: dict[str, CustomOp] = {c.code: c for c in _CUSTOM}


def adder(op: str, custom_code: str | None = None) -> str | None:
    """The Add* method registering a builtin op (or, for "CUSTOM", the custom code); None: TFLM has none."""
    if op == "CUSTOM":
        custom = CUSTOM_OPS.get(custom_code or "")
        return custom.adder if custom else None
    return BUILTIN_ADDERS.get(op)
