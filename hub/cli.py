"""`hub` command line: parses flags, calls hub.api, prints. Nothing else lives here.

Exit codes: 0 success / compatible, 1 not compatible or fails verification,
2 usage or input error. `--json` prints one JSON document on stdout; logs and
progress go to stderr.
"""
from __future__ import annotations

import inspect
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer
from rich.markup import escape
from typer._click.exceptions import ClickException  # typer 0.29 vendors click: its usage errors are these

from hub import __version__
from hub.errors import EXIT_USAGE, HubError, InputError
from hub.firmware.ethos_u import npu_configs
from hub.knowledge import boards
from hub.options import CONVERT_OPTIONS, OPTIONS_BY_KEY, Option, request_keywords
from hub.output import sigterm_as_interrupt, to_json, write_text_atomic
from hub.progress import Progress, console
from hub.report.render import FORMATS, render
from hub.report.sweep import print_summary
from hub.sweep.run import SWEEP_TOML_HELP

# Imported where used, not here: hub.api, hub.report.terminal and hub.report.portability import every stage
# (0.15-0.2 s measured on top of this module's 0.3 s), which `hub --help`, `hub --version` and a usage error
# need not wait for.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="From a trained PyTorch, Keras or ONNX model to a model proven on TensorFlow Lite Micro.")
_state = {"debug": False}



def _typer_option(option: Option) -> Any:
    """A hub convert option (hub.options) as typer declares it."""
    return typer.Option(option.default, option.flag, help=option.help)


ModelArg = typer.Argument(..., help="Model file: .pt/.pt2/.pth (PyTorch), .keras/.h5/SavedModel dir, .onnx, .tflite")
JsonOut = typer.Option(False, "--json", help="Print one JSON document on stdout")
# hub convert's options that other commands take too
InputShape, Factory, TrustPickle, TrustCode, NoRewrite, Npu = (
    _typer_option(OPTIONS_BY_KEY[key]) for key in ("input_shape", "factory", "trust_pickle", "trust_code", "no_rewrite",
                                                    "npu"))


def _listed_npus(npu: str | None) -> bool:
    """`--npu list`: print Vela's accelerator configs."""
    if npu is None or npu.strip().lower() != "list":
        return False
    print("\n".join(npu_configs()))
    return True


def _version(value: bool) -> None:
    if value:
        print(f"hub {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version"),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks of failures"),
) -> None:
    _state["debug"] = debug


def _run(action: Callable[[], int], path: Path | None = None, as_json: bool = False,
         progress: Progress | None = None) -> None:
    """Every failure ends in one line on stderr and a documented exit code; with --json, also in one JSON
    document on stdout (the exit code, the line, and the stages that finished)."""
    try:
        with sigterm_as_interrupt(), warnings.catch_warnings():  # SIGTERM cleans up like Ctrl-C
            if not _state["debug"]:  # library warnings (numpy on NaN weights, torch, TF) are not the user's
                warnings.simplefilter("ignore")
            code = action()
    except HubError as exc:
        if exc.path is None and path is not None:  # stages below the adapters do not know the file's name
            exc.path = str(path)
        _fail(exc.one_line(), exc.exit_code, exc, as_json, progress)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", 130, None, as_json, progress)
    except MemoryError as exc:
        _fail(f"{path or 'model'}: ran out of memory while processing the model", EXIT_USAGE, exc, as_json, progress)
    except Exception as exc:  # a bug or an input we did not anticipate: still one line
        where = f"{path}: " if path else ""
        _fail(f"{where}could not process the model ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
              "rerun with --debug for the traceback", EXIT_USAGE, exc, as_json, progress)
    raise typer.Exit(code)


def _fail(message: str, code: int, exc: BaseException | None, as_json: bool = False,
          progress: Progress | None = None) -> None:
    if _state["debug"] and exc is not None:
        traceback.print_exception(exc)
        child = getattr(exc, "child_traceback", None)
        if child:  # the failing line is in the child (onnx2tf, TensorFlow), not in hub's own frames above
            print(f"--- the child process's stderr, from its traceback ---\n{child}\n---", file=sys.stderr)
    print(f"hub: error: {message}", file=sys.stderr)
    if as_json:
        _emit_json(failure_document(message, code, progress))
    raise typer.Exit(code)


def failure_document(message: str, code: int, progress: Progress | None = None) -> dict[str, Any]:
    """What --json prints when a command fails: the exit code, the one-line error, the stages that finished."""
    return {"ok": False, "exit_code": code, "error": message,
            "finished_stages": dict(progress.timings) if progress is not None else {}}


def _options(input_shape, factory, trust_pickle, trust_code):
    from hub.api import load_options  # why here: see the note under the imports

    return load_options(input_shape, factory, trust_pickle, trust_code)


def _emit_json(doc: Any) -> None:
    sys.stdout.write(to_json(doc))


def convert(model: Path, as_json: bool = False, **flags: Any) -> None:
    """Convert MODEL to a TFLite flatbuffer for TFLM, verify it on the real interpreter, write firmware files."""

    progress = Progress(enabled=None if not as_json else False)

    def action() -> int:
        from hub import api  # why here (and below): see the note under the imports
        from hub.report.terminal import print_convert_summary

        if _listed_npus(flags["npu"]):
            return 0
        options = _options(flags["input_shape"], flags["factory"], flags["trust_pickle"], flags["trust_code"])
        report = api.convert(model, **request_keywords(flags), options=options, progress=progress)
        _emit_json({**report.to_dict(), "output": str(report.output)}) if as_json else print_convert_summary(report)
        return 0

    _run(action, model, as_json, progress)


# typer reads a command's flags from its signature: hub convert's come from hub.options, in its order.
convert.__signature__ = inspect.Signature([  # type: ignore[attr-defined]
    inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=ModelArg, annotation=Path),
    *[inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, default=_typer_option(o), annotation=o.annotation)
      for o in CONVERT_OPTIONS],
    inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, default=JsonOut, annotation=bool)])
app.command()(convert)


@app.command()
def check(
    model: Path = ModelArg,
    target: str = typer.Option("tflm", "--target", help="tflm or ethos-u"),
    quantize: str = typer.Option("int8", "--quantize", help="int8 | int16x8 | float32"),
    input_shape: Optional[List[str]] = InputShape,
    factory: Optional[str] = Factory,
    trust_pickle: bool = TrustPickle,
    trust_code: bool = TrustCode,
    no_rewrite: bool = NoRewrite,
    npu: Optional[str] = Npu,
    as_json: bool = JsonOut,
) -> None:
    """Predict, node by node and before any conversion, what TFLite Micro will refuse, and why."""

    def action() -> int:
        from hub import api
        from hub.report.terminal import print_check

        if _listed_npus(npu):
            return 0
        result = api.check(model, target=target, quantize=quantize,
                           options=_options(input_shape, factory, trust_pickle, trust_code), rewrite=not no_rewrite,
                           npu=npu)
        _emit_json(result.to_dict()) if as_json else print_check(result, model)
        return 0 if result.compatible else 1

    _run(action, model, as_json)


@app.command()
def verify(
    model: Path = typer.Argument(..., help=".tflite model"),
    reference: Optional[Path] = typer.Option(None, "--reference", help="ONNX model to compare outputs with"),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine", help="Fail (exit 1) below this cosine"),
    input_range: Optional[str] = typer.Option(None, "--input-range", help="LO,HI of the synthetic test inputs"),
    data: Optional[Path] = _typer_option(OPTIONS_BY_KEY["data"]),
    max_accuracy_drop: Optional[float] = _typer_option(OPTIONS_BY_KEY["max_accuracy_drop"]),
    as_json: bool = JsonOut,
) -> None:
    """Run a .tflite on the real TFLM interpreter: loads, invokes, smallest arena, fidelity; accuracy on --data."""

    def action() -> int:
        from hub import api
        from hub.report.terminal import print_verification

        result = api.verify(model, reference=reference, min_cosine=min_cosine, input_range=input_range, data=data,
                            max_accuracy_drop=max_accuracy_drop,
                            progress=Progress(enabled=None if not as_json else False))
        _emit_json(result.to_dict()) if as_json else print_verification(result, model)
        return 0 if result.ok else 1

    _run(action, model, as_json)


@app.command()
def export(
    model: Path = typer.Argument(..., help=".tflite model"),
    name: Optional[str] = typer.Option(None, "--name", help="C identifier for the files (default: file stem)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <name>_firmware/)"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder"),
    as_json: bool = JsonOut,
) -> None:
    """Write firmware files for a .tflite: C array, exact op resolver, settings with the measured arena."""

    def action() -> int:
        from hub import api

        result = api.export(model, name=name, out=out, force=force)
        if as_json:
            _emit_json(result)
        else:
            print(f"wrote {', '.join(result['files'])} to {result['output']}")
        return 0

    _run(action, model, as_json)


@app.command()
def report(
    model: Path = ModelArg,
    targets: str = typer.Option("tflm-int8,tflm-float32,tflite,onnxruntime", "--targets"),
    board: Optional[str] = typer.Option(None, "--board", help="Board name (see --board list)"),
    ram: Optional[float] = typer.Option(None, "--ram", help="RAM budget in KB"),
    flash: Optional[float] = typer.Option(None, "--flash", help="Flash budget in KB"),
    fmt: str = typer.Option("text", "--format", help="text | json | md | html"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write to FILE instead of stdout"),
    input_shape: Optional[List[str]] = InputShape,
    factory: Optional[str] = Factory,
    trust_pickle: bool = TrustPickle,
    trust_code: bool = TrustCode,
) -> None:
    """Portability report: where MODEL can run, what blocks each target, whether it fits a board."""

    def action() -> int:
        from hub import api
        from hub.report.portability import exit_code  # why here: see the note under the imports

        if board is not None and board.strip().lower() == "list":
            print(boards.board_list())
            return 0
        if fmt not in FORMATS:
            raise InputError(f"unknown --format {fmt!r}: choose one of {', '.join(FORMATS)}")
        result = api.report(model, targets=targets, board=board, ram_kb=ram, flash_kb=flash,
                            options=_options(input_shape, factory, trust_pickle, trust_code))
        _print_or_write(render(result, fmt), output)
        return exit_code(result)

    _run(action, model, as_json=fmt == "json" and output is None)


@app.command(help="Convert every model in every --quantize mode for TFLM, in parallel on Dask, and judge each "
                  "against boards: sweep.json, sweep.csv, sweep.html and each job's hub convert folder in --out. "
                  "Exit 0 when every job is ok, 1 when some job fails, times out or crashes (each is a row with "
                  "its one-line error), 2 on a usage or input error, 130 on Ctrl-C (finished jobs are kept).\n\n"
                  + escape(SWEEP_TOML_HELP).replace("\n\n", "\n\n\b\n"))
def sweep(
    models: List[Path] = typer.Argument(..., help="Model files, or folders (every model file and SavedModel inside)"),
    quantize: str = typer.Option("int8", "--quantize", help="Comma-separated modes: int8,int16x8,float32"),
    board: Optional[str] = typer.Option(None, "--board", help="Comma-separated boards (default all; --board list)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="Local worker processes (default from cores and memory)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="An existing Dask scheduler, tcp://host:8786 "
                                            "(its workers must see the models and --out at the same paths)"),
    out: Path = typer.Option(Path("sweep"), "--out", help="Output folder"),
    resume: bool = typer.Option(False, "--resume", help="Skip jobs already done with the same model content and options"),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per job (default 3600; sweep.toml may set it)"),
    as_json: bool = JsonOut,
) -> None:
    def action() -> int:
        from hub import api

        if board is not None and board.strip().lower() == "list":
            print(boards.board_list())
            return 0
        doc = api.sweep(models, quantize=quantize, boards=board, workers=workers, scheduler=scheduler, out=out,
                        resume=resume, timeout_s=timeout, progress=console.is_terminal and not as_json)
        _emit_json(doc) if as_json else print_summary(doc)
        if doc["interrupted"]:
            print(f"hub: sweep interrupted: {doc['jobs'] - sum(r['status'] == 'not run' for r in doc['rows'])} of "
                  f"{doc['jobs']} jobs finished, kept in {out}", file=sys.stderr)
            return 130
        return 0 if doc["failed"] == 0 else 1

    _run(action, as_json=as_json)


@app.command()
def optimize(
    model: Path = ModelArg,
    data: Path = typer.Option(..., "--data", help=".npz with x (and optionally integer labels y), or a folder of class subfolders"),
    val: Optional[Path] = typer.Option(None, "--val", help="Validation data, same format (default: a seeded fifth of --data)"),
    prune_ratio: Optional[float] = typer.Option(None, "--prune", help="Fraction of channels to remove, in [0, 1) "
                                                "(default 0.5)"),
    no_distill: bool = typer.Option(False, "--no-distill", help="Train the pruned model on the labels alone"),
    epochs: int = typer.Option(10, "--epochs"),
    lr: float = typer.Option(1e-3, "--lr", help="Adam learning rate"),
    temperature: float = typer.Option(4.0, "--temperature", help="Distillation temperature"),
    alpha: float = typer.Option(0.9, "--alpha", help="Weight of the teacher's soft targets (1 - alpha: labels)"),
    round_to: Optional[int] = typer.Option(None, "--round-to", help="Keep channel counts multiples of this"),
    cluster: Optional[int] = typer.Option(None, "--cluster", help="Cluster each filter to N values (2-128), fine-tune, "
                                          "and store them as TFLM look-up tables (--compress)"),
    cluster_scope: str = typer.Option("layer", "--cluster-scope", help="layer: one set of values per filter, converted "
                                      "with per-tensor weights (2x); channel: per output channel, as convs are "
                                      "usually quantized"),
    qat: bool = typer.Option(False, "--qat", help="Quantization-aware fine-tuning (TFLite's int8 scheme) before conversion"),
    board: Optional[str] = typer.Option(None, "--board", help="Search for the most accurate model that fits this board "
                                        "(hub report --board list), every candidate measured on TFLM"),
    ram: Optional[float] = typer.Option(None, "--ram", help="Search for a RAM budget in KB (instead of --board)"),
    flash: Optional[float] = typer.Option(None, "--flash", help="Search for a flash budget in KB (instead of --board)"),
    prune_levels: Optional[str] = typer.Option(None, "--prune-levels", help="The search's pruning levels "
                                               "(default 0,0.25,0.5,0.75)"),
    seed: int = typer.Option(0, "--seed"),
    target: str = typer.Option("tflm", "--target", help="tflm"),
    input_range: Optional[str] = typer.Option(None, "--input-range", help="LO,HI of image pixels (image folders)"),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default <stem>_optimized_tflm/ here)"),
    name: Optional[str] = typer.Option(None, "--name", help="C identifier for the firmware files"),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder"),
    input_shape: Optional[List[str]] = InputShape,
    factory: Optional[str] = Factory,
    trust_pickle: bool = TrustPickle,
    trust_code: bool = TrustCode,
    as_json: bool = JsonOut,
) -> None:
    """Prune and distill MODEL, then convert it for TFLM; teacher and student measured on the interpreter.
    Exit codes: 0 ok, 1 the model cannot be trained or pruned / TFLM cannot run the result, 2 input error."""

    progress = Progress(enabled=None if not as_json else False)

    def action() -> int:
        from hub import api
        from hub.report.terminal import print_optimize

        report, section = api.optimize(
            model, data=data, val=val, prune_ratio=prune_ratio, distill=not no_distill, epochs=epochs, lr=lr,
            temperature=temperature, alpha=alpha, round_to=round_to, cluster=cluster, cluster_scope=cluster_scope,
            qat=qat,
            board=board, ram_kb=ram, flash_kb=flash, levels=prune_levels, seed=seed, target=target,
            input_range=input_range, out=out, name=name, force=force,
            options=_options(input_shape, factory, trust_pickle, trust_code), progress=progress)
        if as_json:
            _emit_json({**report.to_dict(), "optimize": section, "output": str(report.output)})
        else:
            print_optimize(report, section)
        return 0

    _run(action, model, as_json, progress)


def _print_or_write(text: str, output: Path | None) -> None:
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        write_text_atomic(output, text)


def main() -> None:
    """typer's own usage errors (a missing argument, an unknown flag) come before any command runs: with
    --json they are answered in one JSON document too."""
    try:
        sys.exit(app(standalone_mode=False))  # the command's exit code (typer.Exit), None on success
    except typer.Abort:
        _fail("interrupted; no output was written", 130, None, "--json" in sys.argv[1:])
    except ClickException as exc:
        exc.show()
        if "--json" in sys.argv[1:]:
            _emit_json(failure_document(exc.format_message().splitlines()[0], exc.exit_code))
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
