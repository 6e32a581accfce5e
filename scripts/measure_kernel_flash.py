"""Measure the flash each TFLM kernel adds to a Cortex-M4F firmware; prints hub/knowledge/kernel_flash.py's tables.

Method: compile tflite-micro's library and reference kernels (no OPTIMIZED_KERNEL_DIR) for
`-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mthumb -mfloat-abi=hard -Os -ffunction-sections -fdata-sections`
with the other flags of TFLM's Makefile and its cortex_m_generic target (DebugLog through vsnprintf),
archive them, and link (`--gc-sections`, newlib-nano, nosys) one tiny program per op that registers
exactly that op through MicroMutableOpResolver<1> and then builds a MicroInterpreter, AllocateTensors()
and Invoke()s a model array it cannot see through. An op's flash is the program's text + data
(arm-none-eabi-size) minus that of the same program registering no op; the code several ops' programs
add alike (the same symbols, arm-none-eabi-nm) is listed once as shared, grouped by the ops using it; two
programs linking many kernels at once check that sum. The core is the no-op program's text + data minus
a bare `int main() { return 0; }`; the runtime's RAM beside the arena is the no-op program's .data + .bss
minus the arena's and the bare program's, with the MicroInterpreter and resolver objects' own sizes.
Takes about 25 minutes on 2 cores; objects and programs are kept in --out and reused by a rerun.

Sources (not fetched by this script): a tflite-micro checkout (`--tflm`) at the commit
hub.knowledge.tflm_kernels.TFLM_VERSION names, and the third-party code its Makefile downloads, at the
versions tensorflow/lite/micro/tools/make/{flatbuffers_download.sh,third_party_downloads.inc} pin:
flatbuffers v25.9.23 (this script applies TFLM's flatbuffers.patch to a copy), gemmlowp 719139ce,
ruy d3712831. Toolchain (`--gcc-root`): a GNU Arm toolchain with C++ and newlib, e.g. Debian's
gcc-arm-none-eabi 12.2.rel1 + libstdc++-arm-none-eabi-{newlib,dev} + libnewlib-{arm-none-eabi,dev}
installed (--gcc-root /usr) or unpacked with `dpkg -x` (--gcc-root <dir>/usr).

    python scripts/measure_kernel_flash.py --tflm T --flatbuffers F --gemmlowp G --ruy R --gcc-root /usr
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import textwrap
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

MULTILIB = "thumb/v7e-m+fp/hard"
ARCH = ["-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mthumb", "-mfloat-abi=hard"]
# TFLM Makefile COMMON_FLAGS / CXXFLAGS and cortex_m_generic PLATFORM_FLAGS, with -Os for kernels too
# (the Makefile's default is -O2 for kernels, -Os for the core).
COMMON = ARCH + ["-Os", "-ffunction-sections", "-fdata-sections", "-fno-unwind-tables",
                 "-fno-asynchronous-unwind-tables", "-fomit-frame-pointer", "-funsigned-char",
                 "-DTF_LITE_STATIC_MEMORY", "-DTF_LITE_DISABLE_X86_NEON", "-DTF_LITE_MCU_DEBUG_LOG"]
CXX_ONLY = ["-std=c++17", "-fno-rtti", "-fno-exceptions", "-fno-threadsafe-statics"]
C_ONLY = ["-std=c17"]
BUILD_TYPES = {"default": [], "release": ["-DNDEBUG", "-DTF_LITE_STRIP_ERROR_STRINGS"]}
ARENA = 64 * 1024
WIDE = 100  # extra resolver slots, to measure what one registered op costs in RAM
# Op sets linked together to see how much the per-op sum overestimates (None: every op).
COMBINED: dict[str, list[str] | None] = {
    "cnn": ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "SOFTMAX", "RESHAPE", "AVERAGE_POOL_2D",
            "ADD", "MEAN", "QUANTIZE", "DEQUANTIZE"],
    "all": None,
}

PROGRAM = r"""
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"

extern "C" const unsigned char g_model[];  // defined in another unit: the linker keeps every path
alignas(16) static uint8_t g_arena[%(arena)d];

int main() {
  static tflite::MicroMutableOpResolver<%(slots)d> op_resolver;
  %(register)s
  static tflite::MicroInterpreter interpreter(tflite::GetModel(g_model), op_resolver, g_arena,
                                              sizeof(g_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) return 1;
  return interpreter.Invoke();
}
"""
MODEL = 'extern "C" const unsigned char g_model[8] __attribute__((aligned(16))) = {0};\n'


def library_sources(tflm: Path) -> list[Path]:
    """TFLM's MICROLITE_CC_SRCS + reference kernels (tools/make/sources.inc), cortex_m_generic DebugLog."""
    micro = tflm / "tensorflow/lite/micro"
    files = [p for d in ("", "arena_allocator", "memory_planner", "tflite_bridge", "kernels")
             for p in sorted((micro / d).glob("*.cc"))]
    files = [p for p in files if not p.name.endswith("_test.cc") and "test_helper" not in p.name
             and p.name not in ("debug_log.cc", "test_helpers.cc", "fake_micro_context.cc",
                                "recording_micro_allocator.cc", "mock_micro_graph.cc")]
    files.append(micro / "cortex_m_generic/debug_log.cc")
    for p in sorted((tflm / "tensorflow").rglob("*.c*")):  # TFL_CC_SRCS: shared TFLite code
        rel = p.relative_to(tflm).as_posix()
        skipped = rel.startswith(("tensorflow/lite/micro/", "tensorflow/lite/experimental/"))
        if p.suffix in (".cc", ".c") and not skipped and rel != "tensorflow/lite/array.cc":
            files.append(p)
    return files


def toolchain(gcc_root: Path) -> tuple[Path, list[str], list[str]]:
    """The bin dir, include flags and link flags for a (possibly relocated) Debian-layout toolchain."""
    cxx_inc = next((gcc_root / "include/newlib/c++").iterdir())
    inc = ["-isystem", str(cxx_inc), "-isystem", str(cxx_inc / "arm-none-eabi" / MULTILIB),
           "-isystem", str(gcc_root / "include/newlib")]
    newlib = gcc_root / "lib/arm-none-eabi/newlib"
    link = [f"-L{newlib / MULTILIB}", f"-B{newlib / MULTILIB}", f"--specs={newlib / 'nano.specs'}",
            f"--specs={newlib / 'nosys.specs'}", "-Wl,--gc-sections"]
    return gcc_root / "bin", inc, link


def compile_library(args: argparse.Namespace, build: str, out: Path) -> tuple[Path, list[str]]:
    """Compile every library source into an archive; returns it and the sources that failed."""
    bindir, inc, _ = toolchain(args.gcc_root)
    includes = inc + [f"-I{args.tflm}", f"-I{args.flatbuffers}/include", f"-I{args.gemmlowp}", f"-I{args.ruy}"]
    objdir = out / build / "obj"
    objdir.mkdir(parents=True, exist_ok=True)

    def one(src: Path) -> Path | None:
        obj = objdir / (src.relative_to(args.tflm).as_posix().replace("/", "__") + ".o")
        if obj.exists():
            return obj
        cc = [str(bindir / "arm-none-eabi-g++"), *CXX_ONLY] if src.suffix == ".cc" \
            else [str(bindir / "arm-none-eabi-gcc"), *C_ONLY]
        done = subprocess.run([*cc, *COMMON, *BUILD_TYPES[build], *includes, "-c", str(src), "-o", str(obj)],
                              capture_output=True, text=True)
        return obj if done.returncode == 0 else None

    sources = library_sources(args.tflm)
    with ThreadPoolExecutor(args.jobs) as pool:
        objs = list(pool.map(one, sources))
    failed = [s.relative_to(args.tflm).as_posix() for s, o in zip(sources, objs) if o is None]
    lib = out / build / "libtflm.a"
    lib.unlink(missing_ok=True)
    subprocess.run([str(bindir / "arm-none-eabi-ar"), "rcs", str(lib), *[str(o) for o in objs if o]], check=True)
    return lib, failed


class Linker:
    """Builds the per-op programs against one library archive and reads their sizes."""

    def __init__(self, args: argparse.Namespace, build: str, lib: Path, out: Path) -> None:
        self.bindir, inc, self.link = toolchain(args.gcc_root)
        self.cflags = [*CXX_ONLY, *COMMON, *BUILD_TYPES[build], *inc, f"-I{args.tflm}",
                       f"-I{args.flatbuffers}/include", f"-I{args.gemmlowp}", f"-I{args.ruy}"]
        self.lib, self.dir = lib, out / build / "prog"
        self.dir.mkdir(parents=True, exist_ok=True)
        model = self.dir / "model.cc"
        model.write_text(MODEL)
        self.model_obj = self.compile(model)

    def compile(self, src: Path) -> Path:
        obj = src.with_suffix(".o")
        subprocess.run([str(self.bindir / "arm-none-eabi-g++"), *self.cflags, "-c", str(src), "-o", str(obj)],
                       check=True, capture_output=True, text=True)
        return obj

    def program(self, name: str, adders: list[str], slots: int = 0, bare: bool = False) -> Path | None:
        """Link the program registering `adders`, with a resolver of max(slots, len(adders), 1) entries;
        None if it does not build."""
        src = self.dir / f"{name}.cc"
        register = "\n  ".join(f"op_resolver.{a}();" for a in adders)
        slots = max(slots, len(adders), 1)
        text = ("int main() { return 0; }\n" if bare
                else PROGRAM % {"arena": ARENA, "slots": slots, "register": register})
        elf = self.dir / f"{name}.elf"
        if elf.exists() and src.exists() and src.read_text() == text:  # linked by an earlier run
            return elf
        src.write_text(text)
        try:
            obj = self.compile(src)
            subprocess.run([str(self.bindir / "arm-none-eabi-g++"), *ARCH, str(obj), str(self.model_obj),
                            str(self.lib), *self.link, "-lm", "-o", str(elf)], check=True, capture_output=True)
        except subprocess.CalledProcessError:
            return None
        return elf

    def size(self, elf: Path) -> dict[str, int]:
        text = subprocess.run([str(self.bindir / "arm-none-eabi-size"), str(elf)], check=True,
                              capture_output=True, text=True).stdout.splitlines()[1].split()
        return {"text": int(text[0]), "data": int(text[1]), "bss": int(text[2])}

    def symbols(self, elf: Path) -> Counter[str]:
        """Bytes of each flash symbol (code, rodata, data initialisers), summed over same-named locals."""
        out = subprocess.run([str(self.bindir / "arm-none-eabi-nm"), "-S", str(elf)], check=True,
                             capture_output=True, text=True).stdout
        sizes: Counter[str] = Counter()
        seen = set()
        for m in re.finditer(r"^(\w+) (\w+) [TtRrDdWwVv] (\S+)$", out, re.M):
            if m.group(1) not in seen:  # aliases share an address
                seen.add(m.group(1))
                sizes[m.group(3)] += int(m.group(2), 16)
        return sizes

    def symbol_sizes(self, elf: Path, pattern: str) -> int:
        """Total size of the RAM (.data/.bss) symbols whose demangled name matches `pattern`."""
        out = subprocess.run([str(self.bindir / "arm-none-eabi-nm"), "-C", "-S", str(elf)], check=True,
                             capture_output=True, text=True).stdout
        return sum(int(m.group(1), 16) for m in re.finditer(r"^\w+ (\w+) [bBdD] (.*)$", out, re.M)
                   if re.search(pattern, m.group(2)))


def measure(args: argparse.Namespace, build: str, adders: dict[str, str]) -> dict:
    lib, failed = compile_library(args, build, args.out)
    link = Linker(args, build, lib, args.out)

    def flash(elf: Path) -> int:  # .data's initial values sit in flash too
        size = link.size(elf)
        return size["text"] + size["data"]

    bare = link.program("bare", [], bare=True)
    none = link.program("none", [])
    wide = link.program("none_wide", [], slots=1 + WIDE)
    ops, unbuilt, added = {}, [], {}
    base = link.symbols(none)
    for op, adder in adders.items():
        elf = link.program(op, [adder])
        if elf is None:
            unbuilt.append(op)
            continue
        ops[op] = flash(elf) - flash(none)
        added[op] = {name: size - base[name] for name, size in link.symbols(elf).items() if size > base[name]}
    # Kernels share helpers (quantisation, broadcasting, libm), which each op's delta counts again:
    # how far the per-op sum overshoots a real multi-op firmware.
    combined = {}
    for name, group in COMBINED.items():
        group = [op for op in group if op in ops] if group else list(ops)
        elf = link.program(f"combined_{name}", [adders[op] for op in group])
        combined[name] = {"ops": group, "measured": flash(elf) - flash(none),
                          "sum_of_ops": sum(ops[op] for op in group)} if elf else None
    shared = shared_code(added)
    resolver = link.symbol_sizes(none, r"main::op_resolver$")
    none_size, bare_size = link.size(none), link.size(bare)
    return {
        "build_type": build, "failed_sources": failed, "unbuilt_ops": unbuilt,
        "core_flash": flash(none) - flash(bare),
        "interpreter_object": link.symbol_sizes(none, r"main::interpreter$"),
        "resolver_object_1_op": resolver,
        "resolver_bytes_per_op": (link.symbol_sizes(wide, r"main::op_resolver$") - resolver) // WIDE,
        "static_ram_besides_arena": (none_size["data"] + none_size["bss"] - ARENA
                                     - bare_size["data"] - bare_size["bss"]),
        "combined": combined,
        "ops": ops,
        "shared": shared,
    }


def shared_code(added: dict[str, dict[str, int]]) -> list[tuple[int, list[str]]]:
    """The code several kernels link in (each symbol one op's program adds that another's adds too),
    grouped by the set of ops that use it: [(bytes, ops), ...], largest first."""
    users: dict[str, set[str]] = defaultdict(set)
    size: dict[str, int] = {}
    for op, symbols in added.items():
        for name, n in symbols.items():
            users[name].add(op)
            size[name] = max(size.get(name, 0), n)
    groups: Counter[tuple[str, ...]] = Counter()
    for name, ops in users.items():
        if len(ops) > 1:
            groups[tuple(sorted(ops))] += size[name]
    return sorted(((n, list(ops)) for ops, n in groups.items()), key=lambda g: (-g[0], g[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag in ("--tflm", "--flatbuffers", "--gemmlowp", "--ruy", "--gcc-root"):
        parser.add_argument(flag, type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("/tmp/measure_kernel_flash"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--build-type", choices=sorted(BUILD_TYPES), default="default")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    patched = args.out / "flatbuffers"
    if not patched.exists():  # TFLM's flatbuffers_download.sh patches the release it pins
        shutil.copytree(args.flatbuffers, patched)
        patch = args.tflm / "tensorflow/lite/micro/tools/make/flatbuffers.patch"
        subprocess.run(["patch", "-p1", "-s", "-i", str(patch)], cwd=patched, check=True)
    args.flatbuffers = patched

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: the op list is hub's
    from hub.knowledge.resolver import BUILTIN_ADDERS, CUSTOM_OPS

    adders = dict(BUILTIN_ADDERS)
    adders["TFLM_DECODE"] = CUSTOM_OPS["TFLM_DECODE"].adder
    result = measure(args, args.build_type, adders)
    if result["failed_sources"] or result["unbuilt_ops"]:
        print(f"did not compile: {result['failed_sources']}; did not link: {result['unbuilt_ops']}",
              file=sys.stderr)
    (args.out / f"{args.build_type}.json").write_text(json.dumps(result, indent=1))
    gcc = subprocess.run([str(args.gcc_root / "bin/arm-none-eabi-gcc"), "--version"], check=True,
                         capture_output=True, text=True).stdout.splitlines()[0]
    print(python_table(result, gcc))


def _names(ops: list[str], indent: int) -> str:
    """Op names as one space-separated string, split into adjacent literals of short lines."""
    lines = textwrap.wrap(" ".join(ops), 96 - indent, break_on_hyphens=False)
    literals = [json.dumps(line + " ") for line in lines[:-1]] + [json.dumps(lines[-1])]
    return ("\n" + " " * indent).join(literals)


def python_table(result: dict, gcc: str) -> str:
    """The tables as hub/knowledge/kernel_flash.py holds them."""
    ops = "".join(f"    {json.dumps(op)}: {n},\n" for op, n in sorted(result["ops"].items()))
    shared = "".join(f"    ({n}, {_names(group, 12)}),\n" for n, group in result["shared"])
    together = ""
    for name, c in result["combined"].items():
        if c:
            indent = len(f"    {json.dumps(name)}: (")
            together += f"    {json.dumps(name)}: ({_names(c['ops'], indent)},\n{' ' * indent}{c['measured']}),\n"
    return f"""# --- generated by scripts/measure_kernel_flash.py: do not edit by hand ---
# {gcc}, TFLM BUILD_TYPE={result['build_type']}
CORE_FLASH_BYTES = {result['core_flash']}
INTERPRETER_OBJECT_BYTES = {result['interpreter_object']}
RESOLVER_OBJECT_BYTES = {result['resolver_object_1_op']}  # MicroMutableOpResolver<1>
RESOLVER_BYTES_PER_OP = {result['resolver_bytes_per_op']}
RUNTIME_RAM_BYTES = {result['static_ram_besides_arena']}
KERNEL_FLASH: dict[str, int] = {{
{ops}}}
SHARED_FLASH: tuple[tuple[int, str], ...] = (
{shared})
# Op sets linked together (COMBINED in the script): (ops, their kernels' measured bytes beside the core).
MEASURED_TOGETHER: dict[str, tuple[str, int]] = {{
{together}}}
# --- end of generated tables ---"""


if __name__ == "__main__":
    main()
