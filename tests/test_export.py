"""Firmware export: the generated files compile with real gcc/g++ at -Wall -Wextra -Werror,
the C array links and reproduces the .tflite byte for byte, the resolver registers exactly
the model's ops, and the settings carry the model's real shapes and quantization."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from hub.errors import IncompatibleError, InputError
from hub.firmware.export import export_firmware, sanitize_identifier
from hub.knowledge.resolver import BUILTIN_ADDERS, CUSTOM_OPS
from hub.tflite.model import read_tflite
from tests.conftest import MLPERF, run_hub

pytestmark = pytest.mark.skipif(not (shutil.which("gcc") and shutil.which("g++")), reason="needs gcc and g++")
WARN = ["-Wall", "-Wextra", "-Werror", "-pedantic-errors"]
C_STD, CXX_STD = "-std=c11", "-std=c++17"


def write_main(folder: Path, lang: str, template: str, name: str) -> tuple[Path, list[str]]:
    """A test program from `template` for model `name`, and the compiler command start for `lang`."""
    main = folder / ("main.c" if lang == "c" else "main.cc")
    main.write_text(template.replace("NAME", name))
    return main, ["gcc", C_STD] if lang == "c" else ["g++", CXX_STD]


def compile_run(cmd: list[str], cwd: Path) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def kws_bytes() -> bytes:
    return (MLPERF / "kws" / "reference_int8.tflite").read_bytes()


@pytest.fixture(scope="module", params=["kws", "pipeline"])
def exported(request, tmp_path_factory, kws_bytes) -> tuple[bytes, str, Path]:
    """Firmware files for the MLPerf kws reference model and for a model made by hub's own pipeline."""
    data = kws_bytes if request.param == "kws" else request.getfixturevalue("small_cnn_int8_tflite")[0].read_bytes()
    name = f"{request.param}_net"
    out = tmp_path_factory.mktemp(f"fw_{request.param}")
    paths = export_firmware(data, name, out, 27_648)
    assert sorted(p.name for p in paths) == sorted(
        f"{name}_model_{s}" for s in ("data.h", "data.cc", "ops.h", "settings.h"))
    return data, name, out


WRITE_BACK = r"""
#include <stdio.h>
#include <stdint.h>
#include "NAME_model_data.h"
int main(int argc, char **argv) {
  FILE *f;
  if (argc != 2) return 2;
  if (((uintptr_t)g_NAME_model_data) % 16 != 0) return 3;
  f = fopen(argv[1], "wb");
  if (!f) return 4;
  if (fwrite(g_NAME_model_data, 1, g_NAME_model_data_len, f) != g_NAME_model_data_len) return 5;
  return fclose(f) == 0 ? 0 : 6;
}
"""


@pytest.mark.parametrize("lang", ["c", "c++"])
def test_model_array_links_and_round_trips_byte_for_byte(exported, lang, tmp_path):
    data, name, out = exported
    main, compiler = write_main(tmp_path, lang, WRITE_BACK, name)
    exe = tmp_path / "write_back"
    # The .cc compiles as C too (`-x c`): one file serves both kinds of firmware project.
    compile_run([*compiler, *WARN, "-I", str(out), "-x", lang, str(out / f"{name}_model_data.cc"),
                 "-x", lang, str(main), "-o", str(exe)], tmp_path)
    proc = subprocess.run([str(exe), str(tmp_path / "back.tflite")], capture_output=True, timeout=60)
    assert proc.returncode == 0, f"exit {proc.returncode} (3 = array not 16-byte aligned)"
    assert (tmp_path / "back.tflite").read_bytes() == data


SETTINGS_MAIN = r"""
#include <stdio.h>
#include "NAME_model_settings.h"
int main(void) {
  int i;
  printf("{\"arena\": %d, \"inputs\": %d, \"outputs\": %d, ", kTensorArenaSize, kInputCount, kOutputCount);
  printf("\"in_type\": %d, \"in_scale\": %.9g, \"in_zp\": %d, \"in_bytes\": %d, \"in_shape\": [",
         kInput0Type, (double)kInput0Scale, kInput0ZeroPoint, kInput0Bytes);
  for (i = 0; i < kInput0Rank; ++i) printf(i ? ", %d" : "%d", kInput0Shape[i]);
  printf("], \"out_scale\": %.9g, \"out_zp\": %d, \"out_elements\": %d}\n",
         (double)kOutput0Scale, kOutput0ZeroPoint, kOutput0Elements);
  {
    /* kTensorArenaSize must be a constant expression in C too, for a static arena. */
    static unsigned char arena[kTensorArenaSize];
    (void)arena;
  }
  return 0;
}
"""


@pytest.mark.parametrize("lang", ["c", "c++"])
def test_settings_compile_and_carry_the_models_quantization(exported, lang, tmp_path):
    data, name, out = exported
    main, compiler = write_main(tmp_path, lang, SETTINGS_MAIN, name)
    compile_run([*compiler, *WARN, "-I", str(out), str(main), "-o", str(tmp_path / "settings")], tmp_path)
    values = json.loads(subprocess.run([str(tmp_path / "settings")], capture_output=True, text=True,
                                       check=True).stdout)
    model = read_tflite(data)
    inp, outp = model.io_specs("inputs")[0], model.io_specs("outputs")[0]
    assert values["arena"] == 27_648
    assert (values["inputs"], values["outputs"]) == (len(model.inputs), len(model.outputs))
    assert values["in_shape"] == inp["shape"]
    assert values["in_type"] == 9  # kTfLiteInt8
    assert values["in_bytes"] == int(__import__("numpy").prod(inp["shape"]))
    assert values["in_scale"] == pytest.approx(inp["scale"], rel=1e-7)
    assert values["in_zp"] == inp["zero_point"]
    assert values["out_scale"] == pytest.approx(outp["scale"], rel=1e-7)
    assert values["out_zp"] == outp["zero_point"]


def resolver_stub(folder: Path) -> None:
    """A minimal stand-in for the two TFLM names the ops header uses: TfLiteStatus and
    MicroMutableOpResolver<N>, whose Add* methods record what was registered (with
    TFLM's own refusals: a full resolver or the same op twice)."""
    methods = "\n".join(f'  TfLiteStatus {m}() {{ return Add("{m}"); }}'
                        for m in sorted({*BUILTIN_ADDERS.values(), *(c.adder for c in CUSTOM_OPS.values())}))
    header = folder / "tensorflow" / "lite" / "micro" / "micro_mutable_op_resolver.h"
    header.parent.mkdir(parents=True)
    header.write_text(f"""#pragma once
#include <cstring>
typedef enum {{ kTfLiteOk = 0, kTfLiteError = 1 }} TfLiteStatus;
namespace tflite {{
template <unsigned int tOpCount>
class MicroMutableOpResolver {{
 public:
{methods}
  unsigned int GetRegistrationLength() const {{ return len_; }}
  unsigned int Capacity() const {{ return tOpCount; }}
  const char* Name(unsigned int i) const {{ return names_[i]; }}
 private:
  TfLiteStatus Add(const char* name) {{
    if (len_ >= tOpCount) return kTfLiteError;
    for (unsigned int i = 0; i < len_; ++i) if (std::strcmp(names_[i], name) == 0) return kTfLiteError;
    names_[len_++] = name;
    return kTfLiteOk;
  }}
  const char* names_[tOpCount] = {{}};
  unsigned int len_ = 0;
}};
}}  // namespace tflite
""")


OPS_MAIN = r"""
#include <cstdio>
#include "NAME_model_ops.h"
int main() {
  auto resolver = NAME_model_op_resolver();
  std::printf("%u %u\n", resolver.Capacity(), resolver.GetRegistrationLength());
  for (unsigned int i = 0; i < resolver.GetRegistrationLength(); ++i) std::printf("%s\n", resolver.Name(i));
  tflite::MicroMutableOpResolver<CAPACITY> again;
  return NAME_register_ops(again) == kTfLiteOk ? 0 : 7;
}
"""


def test_op_resolver_registers_exactly_the_models_ops(exported, tmp_path):
    data, name, out = exported
    resolver_stub(tmp_path / "stub")
    model_ops = set(read_tflite(data).op_histogram())
    main = tmp_path / "main.cc"
    main.write_text(OPS_MAIN.replace("NAME", name).replace("CAPACITY", str(len(model_ops))))
    compile_run(["g++", CXX_STD, *WARN, "-I", str(out), "-I", str(tmp_path / "stub"), str(main),
                 "-o", str(tmp_path / "ops")], tmp_path)
    proc = subprocess.run([str(tmp_path / "ops")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    lines = proc.stdout.split()
    capacity, registered, adders = int(lines[0]), int(lines[1]), lines[2:]
    by_adder = {v: k for k, v in BUILTIN_ADDERS.items()}
    assert capacity == registered == len(model_ops)  # N exact: no spare slot, none missing
    assert {by_adder[a] for a in adders} == model_ops


def test_kws_resolver_lists_its_thirteen_op_kinds(kws_bytes, tmp_path):
    export_firmware(kws_bytes, "kws", tmp_path, 27_648)
    text = (tmp_path / "kws_model_ops.h").read_text()
    kinds = read_tflite(kws_bytes).op_histogram()
    assert f"tflite::MicroMutableOpResolver<{len(kinds)}>" in text
    for op in kinds:
        assert f"resolver.{BUILTIN_ADDERS[op]}()" in text


def test_unmeasured_arena_is_written_as_zero_not_guessed(kws_bytes, tmp_path):
    export_firmware(kws_bytes, "kws", tmp_path, None)
    text = (tmp_path / "kws_model_settings.h").read_text()
    assert "kTensorArenaSize = 0," in text and "NOT MEASURED" in text


def test_op_without_tflm_kernel_cannot_get_a_resolver(tile_float_tflite, tmp_path):
    with pytest.raises(IncompatibleError, match="TILE"):
        export_firmware(tile_float_tflite.read_bytes(), "tile", tmp_path, 1024)


@pytest.mark.parametrize("name, expected", [
    ("my-model", "my_model"), ("ResNet 8", "ResNet_8"), ("3net", "m_3net"), ("__x__", "x"),
    ("kws.v2", "kws_v2"), ("int8_model", "int8_model"),
])
def test_sanitize_identifier(name, expected):
    assert sanitize_identifier(name) == expected


@pytest.mark.parametrize("name", ["int", "class", "delete", " while ", "and", "---", ""])
def test_keywords_and_empty_names_are_refused(name):
    with pytest.raises(InputError):
        sanitize_identifier(name)


def test_cli_export_writes_the_bundle_with_the_measured_arena(tmp_path):
    out = tmp_path / "fw"
    proc = run_hub("export", MLPERF / "ad" / "reference_int8.tflite", "--name", "ad-ref", "--out", out, "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)
    assert sorted(doc["files"]) == sorted(f"ad_ref_model_{s}" for s in ("data.h", "data.cc", "ops.h", "settings.h"))
    recommended = doc["memory"]["arena_recommended_bytes"]
    assert recommended >= doc["memory"]["arena_bytes"] > 0
    assert f"kTensorArenaSize = {recommended}," in (out / "ad_ref_model_settings.h").read_text()


def test_cli_export_refuses_a_keyword_name(tmp_path):
    proc = run_hub("export", MLPERF / "ad" / "reference_int8.tflite", "--name", "class", "--out", tmp_path / "fw")
    assert proc.returncode == 2
    assert "keyword" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "fw").exists()
