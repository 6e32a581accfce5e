"""Firmware bundle: the .tflite as a C array, an exact op resolver, and the settings firmware needs.

`export_firmware` writes four files for identifier NAME:
- NAME_model_data.h / .cc: `alignas(16) const unsigned char g_NAME_model_data[]` and
  `g_NAME_model_data_len`, valid C (C11) and C++ (what `xxd -i` gives, plus alignment,
  const, C linkage and a header);
- NAME_model_ops.h: `NAME_model_op_resolver()` returning `tflite::MicroMutableOpResolver<N>`
  with exactly the N distinct ops the model uses registered, and `NAME_register_ops(resolver)`
  for firmware that keeps its own resolver object;
- NAME_model_settings.h: `kTensorArenaSize` and each input's and output's shape, TfLiteType,
  scale and zero point as compile-time constants (valid C and C++); each input's axes in words
  (hub.convert.layout's decision: the source's order, or channels moved last and from what).
The settings constants follow TFLM's examples and are not prefixed with NAME (one model
per translation unit); the data array and resolver function are.
"""
from __future__ import annotations

import re
from pathlib import Path

from hub.artifacts import InputLayout
from hub.errors import IncompatibleError, InputError
from hub.knowledge import resolver
from hub.knowledge.tflm_kernels import TFLITE_TYPES
from hub.tflite.model import TFLiteModel, read_tflite

# Reserved words of C (C23, cppreference "C keywords") and C++ (C++23, cppreference
# "C++ keywords", alternative tokens included): a name equal to one is refused.
C_KEYWORDS = frozenset(
    "alignas alignof auto bool break case char const constexpr continue default do double else enum "
    "extern false float for goto if inline int long nullptr register restrict return short signed "
    "sizeof static static_assert struct switch thread_local true typedef typeof typeof_unqual union "
    "unsigned void volatile while _Alignas _Alignof _Atomic _BitInt _Bool _Complex _Decimal128 "
    "_Decimal32 _Decimal64 _Generic _Imaginary _Noreturn _Static_assert _Thread_local".split()
)
CXX_KEYWORDS = frozenset(
    "alignas alignof and and_eq asm atomic_cancel atomic_commit atomic_noexcept auto bitand bitor "
    "bool break case catch char char8_t char16_t char32_t class compl concept const consteval "
    "constexpr constinit const_cast continue co_await co_return co_yield decltype default delete do "
    "double dynamic_cast else enum explicit export extern false float for friend goto if inline int "
    "long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected "
    "public reflexpr register reinterpret_cast requires return short signed sizeof static "
    "static_assert static_cast struct switch synchronized template this thread_local throw true try "
    "typedef typeid typename union unsigned using virtual void volatile wchar_t while xor xor_eq".split()
)

BYTES_PER_LINE = 12


AXIS_LETTERS = {"batch": "N", "channels": "C", "depth": "D", "height": "H", "width": "W", "length": "W"}


def input_layout_text(layout: dict) -> str:
    """One input's axes in the .tflite (hub.artifacts.InputLayout.to_dict) in words, as firmware must fill it:
    the settings header and the report say the same."""
    axes = ", ".join(f"{a}={d}" for a, d in zip(layout["axes"], layout["shape"]))
    if not layout["channels_moved_last"]:
        return f"({axes}), in the source model's order (no transpose)"
    if layout.get("framework_layout") == "NHWC":
        return f"({axes}), the Keras model's own NHWC order ({layout['reason']})"
    source = ", ".join(AXIS_LETTERS.get(a, a) for a in layout["source_axes"])
    return (f"({axes}): channels moved last from the source's ({source}); transpose the source's samples by "
            f"{tuple(layout['perm'])} ({layout['reason']})")


def sanitize_identifier(name: str) -> str:
    """A C identifier from a user's --name: other characters become '_', a leading digit gets 'm_'.

    Refuses (InputError) an empty result, a C or C++ keyword, and names reserved to the
    implementation (leading '__' or '_' + capital).
    """
    ident = _c_characters(name)
    if not ident:
        raise InputError(f"--name {name!r} has no letters or digits to build a C identifier from")
    if ident in C_KEYWORDS or ident in CXX_KEYWORDS:
        raise InputError(f"--name {name!r} is a C/C++ keyword; choose another name (e.g. {ident}_model)")
    if len(ident) > 200:
        raise InputError(f"--name {name!r} is too long for a C identifier (max 200 characters)")
    return ident


def identifier_from_file(path: Path) -> str:
    """The default firmware name, from a file's name: resnet-tiny.pt -> resnet_tiny ("model" when no
    letter is left, a C/C++ keyword gets "_model": the user did not choose it, so it is not refused)."""
    stem = path.name.split(".")[0] if path.is_file() or path.suffix else path.name
    ident = _c_characters(stem).lower()[:200] or "model"
    return f"{ident}_model" if ident in C_KEYWORDS or ident in CXX_KEYWORDS else ident


def _c_characters(text: str) -> str:
    """Runs of characters a C identifier cannot hold become '_'; a leading digit gets 'm_'."""
    ident = re.sub(r"[^A-Za-z0-9_]+", "_", text.strip()).strip("_")
    return f"m_{ident}" if ident[:1].isdigit() else ident


def export_firmware(tflite_bytes: bytes, name: str, out_dir: Path, arena_bytes: int | None,
                    arena_note: str | None = None, constants: dict[str, tuple[int, str]] | None = None,
                    layouts: list[InputLayout] | None = None) -> list[Path]:
    """Write the four firmware files for `name` into out_dir; returns their paths.

    `arena_bytes` becomes kTensorArenaSize (pass the measured recommendation); None
    writes 0 with a comment, so firmware fails loudly rather than guessing. `arena_note` says where a
    figure that was not measured comes from; `constants` ({name: (value, comment)}) join the settings;
    `layouts` (the conversion's, hub.convert.layout) name each input's axes in the settings header.
    """
    ident = sanitize_identifier(name)
    model = read_tflite(tflite_bytes)
    adders = resolver_adders(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        f"{ident}_model_data.h": data_header(ident, len(tflite_bytes)),
        f"{ident}_model_data.cc": data_source(ident, tflite_bytes),
        f"{ident}_model_ops.h": ops_header(ident, adders),
        f"{ident}_model_settings.h": settings_header(ident, model, arena_bytes, arena_note, constants, layouts),
    }
    paths = []
    for file_name, text in files.items():
        path = out_dir / file_name
        path.write_text(text)
        paths.append(path)
    return paths


def resolver_adders(model: TFLiteModel) -> list[str]:
    """The Add* calls for each distinct op in first-use order; IncompatibleError for ops TFLM lacks."""
    adders: list[str] = []
    missing: list[str] = []
    for op in [*model.ops, *model.subgraph_ops]:  # a WHILE's body ops are registered too
        adder = resolver.adder(op.name, op.custom_code)
        label = f"custom op {op.custom_code!r}" if op.name == "CUSTOM" else op.name
        if adder is None:
            missing.append(label) if label not in missing else None
        elif adder not in adders:
            adders.append(adder)
    if missing:
        raise IncompatibleError(f"TFLite Micro has no kernel for {', '.join(missing)}: no op resolver can be written")
    return adders


def _guard(ident: str, suffix: str) -> str:
    return f"{ident.upper()}_{suffix}_H_"


def data_header(ident: str, length: int) -> str:
    guard = _guard(ident, "MODEL_DATA")
    return f"""/* Generated by hub: {ident}'s .tflite flatbuffer ({length} bytes) as a C array.
 * TFLM reads the model in place, so the array is 16-byte aligned and const (stays in flash). */
#ifndef {guard}
#define {guard}

#ifdef __cplusplus
extern "C" {{
#endif

extern const unsigned char g_{ident}_model_data[];
extern const unsigned int g_{ident}_model_data_len;

#ifdef __cplusplus
}}
#endif

#endif  /* {guard} */
"""


def data_source(ident: str, data: bytes) -> str:
    rows = []
    for start in range(0, len(data), BYTES_PER_LINE):
        chunk = data[start : start + BYTES_PER_LINE]
        rows.append("  0x" + chunk.hex(",").replace(",", ", 0x") + ",")  # bytes.hex: C speed for 28 MB models
    body = "\n".join(rows)
    return f"""/* Generated by hub: {ident}'s .tflite flatbuffer ({len(data)} bytes). Compiles as C11 or C++11. */
#include "{ident}_model_data.h"

#ifndef __cplusplus
#include <stdalign.h>
#endif

alignas(16) const unsigned char g_{ident}_model_data[] = {{
{body}
}};

const unsigned int g_{ident}_model_data_len = {len(data)};
"""


def ops_header(ident: str, adders: list[str]) -> str:
    guard = _guard(ident, "MODEL_OPS")
    n = len(adders)
    register = "\n".join(f"  if (resolver.{a}() != kTfLiteOk) return kTfLiteError;" for a in adders)
    return f"""// Generated by hub: registers exactly the {n} ops {ident} uses, so the firmware links
// only their kernels. Ops: {", ".join(a[3:] for a in adders)}.
#ifndef {guard}
#define {guard}

#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

// For firmware that owns its resolver: {ident}_register_ops(my_resolver).
inline TfLiteStatus {ident}_register_ops(tflite::MicroMutableOpResolver<{n}>& resolver) {{
{register}
  return kTfLiteOk;
}}

// A ready resolver: `static auto resolver = {ident}_model_op_resolver();`
inline tflite::MicroMutableOpResolver<{n}> {ident}_model_op_resolver() {{
  tflite::MicroMutableOpResolver<{n}> resolver;
  (void){ident}_register_ops(resolver);
  return resolver;
}}

#endif  // {guard}
"""


def settings_header(ident: str, model: TFLiteModel, arena_bytes: int | None, arena_note: str | None = None,
                    constants: dict[str, tuple[int, str]] | None = None, layouts: list[InputLayout] | None = None) -> str:
    guard = _guard(ident, "MODEL_SETTINGS")
    arena_note = arena_note or ("hub: smallest arena measured on the TFLM interpreter + 10 % headroom, whole KB"
                                if arena_bytes else "NOT MEASURED: set it from `hub verify`")
    enum_lines = [f"  kTensorArenaSize = {int(arena_bytes or 0)},  /* {arena_note} */",
                  *(f"  {key} = {value},  /* {_c_comment(note)} */" for key, (value, note) in (constants or {}).items()),
                  f"  kInputCount = {len(model.inputs)},", f"  kOutputCount = {len(model.outputs)},"]
    const_lines: list[str] = []
    for kind, which in (("Input", "inputs"), ("Output", "outputs")):
        for i, spec in enumerate(model.io_specs(which)):
            e, c = _tensor_constants(f"k{kind}{i}", spec)
            enum_lines += e
            const_lines += c
    axes = _input_axes(model, layouts or [])
    enums = "\n".join(enum_lines)
    consts = "\n".join(const_lines)
    return f"""/* Generated by hub: what firmware needs to feed and read {ident} (valid C and C++).
 * Shapes are the TFLite tensors'{axes}
 * Quantize an input as q = round(x / kInput0Scale) + kInput0ZeroPoint, clamped to the type's range;
 * dequantize an output as x = (q - kOutput0ZeroPoint) * kOutput0Scale.
 * A scale of 0 means the tensor is not quantized.{_state_note(model)} */
#ifndef {guard}
#define {guard}

enum {{
{enums}
}};

{consts}

#endif  /* {guard} */
"""


def _state_note(model: TFLiteModel) -> str:
    """Variable tensors (a fused LSTM's hidden and cell state) keep their values between invokes in TFLM."""
    if not any(t.is_variable for t in model.tensors):
        return ""
    return ("\n * The model keeps state between invokes (variable tensors: a fused LSTM's hidden and cell state):"
            "\n * call interpreter.Reset() before each independent input, as hub's verification does.")


def _input_axes(model: TFLiteModel, layouts: list[InputLayout]) -> str:
    """The header's words on the inputs' axes: each input's (firmware fills it in this order), else the
    converter's default for a .tflite hub did not convert."""
    by_name = {layout.name: layout for layout in layouts}
    specs = model.io_specs("inputs")
    if not layouts or any(spec["name"] not in by_name for spec in specs):
        return " (NHWC for images)."
    lines = [f'\n *   input "{_c_comment(spec["name"])}": {spec["dtype"]} '
             f'{_c_comment(input_layout_text(by_name[spec["name"]].to_dict()))}' for spec in specs]
    return "; the inputs' axes, in the order firmware fills them (the last varies fastest):" + "".join(lines)


def _tensor_constants(prefix: str, spec: dict) -> tuple[list[str], list[str]]:
    """Enum entries (rank, dims, elements, bytes, type) and static consts (shape, scale, zero point)."""
    shape = [int(d) for d in spec["shape"]]
    type_value, type_name, itemsize = TFLITE_TYPES.get(spec["dtype"], (0, "kTfLiteNoType", 1))
    elements = 1
    for d in shape:
        elements *= d
    enum_lines = [f"  /* {prefix[1:]}: '{_c_comment(spec['name'])}' ({spec['dtype']}) */",
                  f"  {prefix}Type = {type_value},  /* {type_name} */", f"  {prefix}Rank = {len(shape)},"]
    enum_lines += [f"  {prefix}Dim{j} = {d}," for j, d in enumerate(shape)]
    enum_lines += [f"  {prefix}Elements = {elements},", f"  {prefix}Bytes = {elements * itemsize},"]
    scale = spec["scale"] if isinstance(spec["scale"], float) else 0.0
    zero_point = spec["zero_point"] if isinstance(spec["zero_point"], int) else 0
    dims = ", ".join(str(d) for d in shape) or "0"
    const_lines = [
        f"static const int {prefix}Shape[{max(len(shape), 1)}] = {{{dims}}};",
        f"static const float {prefix}Scale = {_c_float(scale)};",
        f"static const int {prefix}ZeroPoint = {zero_point};",
    ]
    return enum_lines, const_lines


def _c_float(value: float) -> str:
    """A float literal that round-trips float32 exactly (9 significant digits)."""
    text = f"{value:.9g}"
    if not any(ch in text for ch in ".e"):
        text += ".0"
    return text + "f"


def _c_comment(text: str) -> str:
    return text.replace("*/", "* /").replace("\n", " ")
