"""hub check against the real TFLM interpreter on every .tflite in tflite-micro's own repository.

For each file: `hub.check.tflite.analyse_tflite` (what `hub check MODEL.tflite` runs) gives a verdict,
"will run", "will not run" or "unknown"; `hub.verify.tflm.verify(bytes, None, None)` (what `hub verify`
runs: TFLM in a child, inputs at their zero point) says whether TFLM allocates and invokes it.
The table counts agreements, false "will run" (the check lets through what TFLM refuses: the one
error the check must never make), false "will not run" and "unknown"; every disagreement is listed
with its cause (CAUSES below, written after reading TFLM's message for that file).

The corpus is not in this repository. Get it from a tflite-micro checkout at the commit
hub.knowledge.tflm_kernels.TFLM_VERSION names:

    git clone https://github.com/tensorflow/tflite-micro && cd tflite-micro
    git archive HEAD $(git ls-tree -r --name-only HEAD | grep '\\.tflite$') | tar -x -C /tmp/corpus

    .venv/bin/python bench/tflm_corpus.py /tmp/corpus [--match SUBSTRING]
Writes bench/results/tflm_corpus.md and the raw figures beside it (tflm_corpus.json);
--render-only rewrites the .md from that .json without measuring again.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.convert_speed import add_output_args, recorded_run  # noqa: E402

# Why check and TFLM disagreed, by path prefix (relative to the corpus root): the disagreements the first run
# found (issue 13), each with its cause and what fixed it. A disagreement shows its cause here if it comes
# back, or "unexplained" if it is new.
CAUSES: dict[str, str] = {
    "tensorflow/lite/micro/models/person_detect_vela.tflite":
        "false will run: one custom `ethos-u` op (Vela's Ethos-U command stream); the check took every custom "
        "code the resolver can register as runnable, but AddEthosU registers nothing without the Ethos-U kernel "
        "and driver. Fixed: custom ops carry what they need (hub.knowledge.resolver.CUSTOM_OPS), and `ethos-u` "
        "blocks with that.",
    "tensorflow/lite/micro/integration_tests/seanet/transpose_conv/":
        "false will not run: int16x8 TRANSPOSE_CONV; the rules read operands in CONV_2D order (data = first "
        "computed input = the int32 output_shape, a model input here) and required output_shape constant, which "
        "TFLM does not. Fixed: operand roles per op (tflm_kernels.OPERAND_ROLES), no constness rule on input 0.",
    "tensorflow/lite/micro/examples/micro_speech/models/audio_preprocessor_":
        "false will not run: SignalFilterBankSpectralSubtraction was missing from the check's custom-op list while "
        "export.py's resolver table had it. Fixed: one custom-op table (hub.knowledge.resolver) for both.",
}

# The first run, before those fixes (same corpus, same interpreter).
FIRST_RUN = ("136 agree, 1 false will run (models/person_detect_vela.tflite), 7 false will not run (the 5 "
             "seanet transpose_conv files, the 2 micro_speech audio_preprocessor files), 0 unknown")


def outcome(verdict: str | None, tflm_ok: bool | None) -> str:
    """agree / false will run / false will not run / unknown / check failed / tflm failed to start."""
    if verdict is None:
        return "check failed"
    if tflm_ok is None:
        return "tflm not run"
    if verdict == "unknown":
        return "unknown"
    if verdict == "will run":
        return "agree" if tflm_ok else "false will run"
    return "false will not run" if tflm_ok else "agree"


def measure_file(path: Path, root: Path) -> dict:
    from hub.check.tflite import analyse_tflite
    from hub.tflite.model import read_tflite
    from hub.verify.tflm import verify

    data = path.read_bytes()
    row: dict = {"file": str(path.relative_to(root)), "bytes": len(data)}
    try:
        model = read_tflite(data)
        row["ops"] = sorted({op.name if op.name != "CUSTOM" else f"CUSTOM:{op.custom_code}" for op in model.ops})
    except Exception as exc:  # a corrupt file: both sides should refuse it
        row["ops"] = []
        row["read_error"] = str(exc)
    t0 = time.perf_counter()
    try:
        check = analyse_tflite(data)
        row["verdict"] = check.verdict
        row["check_findings"] = [f"{f.severity}: {f.message} ({f.node})" for f in check.findings
                                 if f.severity in ("error", "risk")]
    except Exception as exc:
        row["verdict"], row["check_error"] = None, f"{type(exc).__name__}: {exc}"
    row["check_s"] = time.perf_counter() - t0
    try:
        result = verify(data, None, None)
        row["tflm_ok"] = bool(result.ok)
        row["tflm"] = {"loads": result.tflm.loads, "invokes": result.tflm.invokes,
                       "arena_bytes": result.memory.arena_bytes}
        row["tflm_message"] = next((f.message for f in result.findings if f.severity == "error"), None)
    except Exception as exc:
        row["tflm_ok"], row["tflm_message"] = None, f"{type(exc).__name__}: {exc}"
    row["outcome"] = outcome(row["verdict"], row["tflm_ok"])
    if row["outcome"] != "agree":
        row["cause"] = next((c for prefix, c in CAUSES.items() if row["file"].startswith(prefix)), "unexplained")
    return row


def measure_all(root: Path, match: str) -> dict:
    files = sorted(p for p in root.rglob("*.tflite") if match in str(p.relative_to(root)))
    if not files:
        raise SystemExit(f"no .tflite files under {root}")
    rows = []
    for i, path in enumerate(files, 1):
        rows.append(measure_file(path, root))
        print(f"[{i}/{len(files)}] {rows[-1]['file']}: {rows[-1]['verdict']} / TFLM "
              f"{'ok' if rows[-1]['tflm_ok'] else 'fails'} -> {rows[-1]['outcome']}", file=sys.stderr, flush=True)
    return {"root": str(root), "rows": rows}


def _cell(text: str | None, limit: int = 160) -> str:
    text = (text or "").replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render(run: dict) -> str:
    from hub.knowledge.tflm_kernels import TFLM_VERSION

    rows = run["rows"]
    counts = Counter(r["outcome"] for r in rows)
    verdicts = Counter((r["verdict"], "ok" if r["tflm_ok"] else "fails") for r in rows)
    lines = [
        "# hub check vs the TFLM interpreter on tflite-micro's own .tflite files",
        "",
        f"Written by `{run['command']}` on {run['date']} ({run['seconds']:.0f} s) on {platform.machine()} "
        f"Python {platform.python_version()}. Corpus: every `*.tflite` in tflite-micro at the commit "
        f"`{TFLM_VERSION}` names ({len(rows)} files). TFLM: the pip interpreter (host reference kernels), "
        "through `hub.verify.tflm.verify` with every input at its zero point.",
        "",
        "| outcome | files |",
        "|---|---|",
        *[f"| {k} | {counts.get(k, 0)} |" for k in
          ("agree", "false will run", "false will not run", "unknown", "check failed", "tflm not run")],
        "",
        "| check verdict | TFLM runs it | TFLM refuses it |",
        "|---|---|---|",
        *[f"| {v} | {verdicts.get((v, 'ok'), 0)} | {verdicts.get((v, 'fails'), 0)} |"
          for v in ("will run", "will not run", "unknown")],
        "",
        "## Every file that is not an agreement",
        "",
        "| file | ops | check | TFLM | outcome | cause |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["outcome"] == "agree":
            continue
        check = r["verdict"] or r.get("check_error")
        if r.get("check_findings"):
            check = f"{check}: {r['check_findings'][0]}"
        tflm = "runs" if r["tflm_ok"] else f"fails: {r.get('tflm_message')}"
        lines.append(f"| {r['file']} | {', '.join(r['ops'])} | {_cell(check)} | {_cell(tflm)} | **{r['outcome']}** "
                     f"| {_cell(r.get('cause'), 400)} |")
    lines += ["", "## Agreements where TFLM refuses the file", "", "| file | check says | TFLM says |", "|---|---|---|"]
    for r in rows:
        if r["outcome"] == "agree" and not r["tflm_ok"]:
            lines.append(f"| {r['file']} | {_cell(r['check_findings'][0] if r.get('check_findings') else '')} "
                         f"| {_cell(r.get('tflm_message'))} |")
    lines += ["", "## Causes of the disagreements seen so far", "", f"First run: {FIRST_RUN}.", "",
              *[f"- `{prefix}`: {cause}" for prefix, cause in CAUSES.items()],
              "", "Raw figures (every file, ops, findings, arena): `bench/results/tflm_corpus.json`.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, help="folder holding tflite-micro's .tflite files")
    parser.add_argument("--match", default="", help="only files whose path contains this")
    add_output_args(parser, ROOT / "bench" / "results" / "tflm_corpus.md")
    args = parser.parse_args()
    if not args.render_only and args.corpus is None:
        parser.error("give the corpus folder (see --help)")
    run = recorded_run(args, "bench/tflm_corpus.py", lambda: measure_all(args.corpus, args.match))
    text = render(run)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
