"""`hub convert`'s options, declared once: flag, type, default, help, where the value goes, who else takes it.

Everything else is derived from CONVERT_OPTIONS:
- hub.cli builds `hub convert`'s flags (and the shared --input-shape, --factory, ... of other commands) from it;
- hub.api.convert takes the same names as keywords and turns them into a ConvertRequest, checked once by
  hub.api.validate before any work;
- hub.convert.converter's ConvertOptions (and the converter child's job.json, read by hub.convert.worker)
  carries the options marked `converter`;
- hub.sweep.run's sweep.toml keys (passed on to each job's `hub convert`) are the options marked `sweep`.

Adding an option: one row here, then the code that acts on it (and README's options table).
This module stays light: hub.cli imports it at start-up and the converter child imports it.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

SCHEDULES = ("min-arena", "default")
CALIBRATION_METHODS = ("minmax", "percentile", "mse")  # `--calibration-method`: hub.convert.calibration.activation_range  # `--schedule`: hub.tflite.schedule's order, or the converter's


@dataclass(frozen=True)
class Option:
    flag: str  # --flag; its name with "_" for "-" is the cli parameter and the sweep.toml key (`key`)
    type: type  # bool (a flag), str, float, Path, or list (of str: a repeatable flag)
    default: Any  # the flag's default
    help: str
    field: str | None = None  # the ConvertRequest field / api.convert keyword (default: `key`)
    negate: bool = False  # a flag that turns its field off: --no-rewrite -> rewrite=False
    load: bool = False  # read by the model's adapter: goes into api.convert's `options` (a LoadOptions)
    choices: tuple[str, ...] = ()  # the values it takes (checked by `validate`, and in sweep.toml)
    converter: bool = False  # reaches the converter child (ConvertOptions, job.json, hub.convert.worker)
    sweep: bool = False  # a sweep.toml key: `hub sweep` passes it on to each job's hub convert

    @property
    def key(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def name(self) -> str:
        """The field it sets (load options: their key)."""
        return self.field or self.key

    @property
    def field_default(self) -> Any:
        return (not self.default) if self.negate else self.default

    @property
    def annotation(self) -> Any:
        """The Python type of the flag's value, as typer reads it."""
        kind = List[str] if self.type is list else self.type
        return kind if self.default is not None else Optional[kind]


# In `hub convert --help` order.
CONVERT_OPTIONS: tuple[Option, ...] = (
    Option("--target", str, "tflm", "tflm (microcontrollers), ethos-u (Arm NPU, via Vela) or tflite (mobile LiteRT)"),
    Option("--quantize", str, "int8", "int8 | int16x8 | auto (int8, the layers it loses most in int16, measured on "
           "TFLM until --min-cosine, default 0.99, or --max-accuracy-drop holds) | float32 (tflite also float16)"),
    Option("--calibration", Path, None, ".npy/.npz of samples, or a folder of images", sweep=True),
    Option("--input-range", str, None, "LO,HI of inputs for synthetic/image calibration (default 0,1)", sweep=True),
    Option("--out", Path, None, "Output folder (default <stem>_<target>/ here)"),
    Option("--name", str, None, "C identifier for the firmware files"),
    Option("--force", bool, False, "Replace an existing output folder"),
    Option("--min-cosine", float, None, "Fail (exit 1) if int8-vs-float cosine is lower (--quantize auto: also "
           "its target, default 0.99)", sweep=True),
    Option("--data", Path, None, "Accuracy on your data: .npz with x and optionally integer labels y (FILE.npz:ARRAY "
           "for x), or a folder of class subfolders; the source and TFLM measured on every sample", sweep=True),
    Option("--max-accuracy-drop", float, None, "Fail (exit 1) if TFLM's accuracy on --data is more than this many "
           "percentage points below the source's (without labels: samples whose top-1 changed)", sweep=True),
    Option("--per-channel-dense", bool, False,
           "Per-channel FULLY_CONNECTED weights (default per-tensor, as MLPerf Tiny's references)",
           converter=True, sweep=True),
    Option("--per-tensor-weights", bool, False, "Every weight per tensor, conv too (for models clustered per layer: "
           "one look-up table per filter with --compress)", converter=True, sweep=True),
    Option("--calibration-method", str, "minmax", "int8 activation ranges from the calibration samples: minmax (the "
           "range seen), percentile (99.99th), mse (least rounding error)", choices=CALIBRATION_METHODS,
           converter=True, sweep=True),
    Option("--input-shape", list, None, "[NAME=]1,3,32,32 (repeatable): static input shape", load=True, sweep=True),
    Option("--factory", str, None, "PyTorch model factory: module:function or path.py:Class (runs that code)",
           load=True, sweep=True),
    Option("--trust-pickle", bool, False, "Allow unpickling a whole PyTorch module (runs code from the file)",
           load=True, sweep=True),
    Option("--trust-code", bool, False, "Allow Keras Lambda layers / custom objects (runs code from the file)",
           load=True, sweep=True),
    Option("--no-rewrite", bool, False,
           "Keep what TFLM has no kernel for (GELU, LayerNorm, GRU, LRN, ...) instead of rewriting it",
           field="rewrite", negate=True, sweep=True),
    Option("--npu", str, None, "--target ethos-u: Vela's accelerator config (default ethos-u55-128; "
           "--npu list shows them)"),
    Option("--schedule", str, "min-arena", "min-arena: reorder operators for the least TFLM arena (kept only when the "
           "measured arena drops); default: keep the converter's order", choices=SCHEDULES, sweep=True),
    Option("--compress", bool, False, "Store clustered weights as TFLM look-up tables "
           "(DECODE op): less flash, more arena; for models from hub optimize --cluster", sweep=True),
)
OPTIONS_BY_KEY: dict[str, Option] = {o.key: o for o in CONVERT_OPTIONS}
REQUEST_OPTIONS = tuple(o for o in CONVERT_OPTIONS if not o.load)
CONVERTER_OPTIONS = tuple(o for o in CONVERT_OPTIONS if o.converter)
SWEEP_OPTIONS = tuple(o for o in CONVERT_OPTIONS if o.sweep)

# What api.convert takes: the model, every non-load option by field name, the adapter's LoadOptions (built from
# the load options by hub.api.load_options) and the normalisation passes to run (default all; tests use it).
ConvertRequest = dataclasses.make_dataclass(
    "ConvertRequest",
    [("model", Path), *[(o.name, o.annotation, dataclasses.field(default=o.field_default)) for o in REQUEST_OPTIONS],
     ("options", "LoadOptions | None", dataclasses.field(default=None)),
     ("passes", "list[str] | None", dataclasses.field(default=None))],
    frozen=True)
ConvertRequest.__module__ = __name__
ConvertRequest.__doc__ = "api.convert's arguments (see CONVERT_OPTIONS); `validate` checks them."


def api_signature() -> inspect.Signature:
    """api.convert's signature as help() and editors show it: the model, then ConvertRequest's fields and progress."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    fields = dataclasses.fields(ConvertRequest)
    return inspect.Signature(
        [inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation="str | Path"),
         *[inspect.Parameter(f.name, keyword, default=f.default, annotation=f.type) for f in fields[1:]],
         inspect.Parameter("progress", keyword, default=None, annotation="Progress | None")],
        return_annotation="ConvertReport")


def request_keywords(values: dict[str, Any]) -> dict[str, Any]:
    """Flag values by key (the cli's parameters, sweep.toml's keys) -> api.convert keywords, load options left out."""
    return {o.name: (not values[o.key] if o.negate else values[o.key]) for o in REQUEST_OPTIONS if o.key in values}


def converter_fields(request: Any) -> dict[str, Any]:
    """The options the converter child reads (ConvertOptions' own fields, job.json's keys)."""
    return {o.name: getattr(request, o.name) for o in CONVERTER_OPTIONS}
