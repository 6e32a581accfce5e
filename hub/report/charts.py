"""Self-contained inline SVG charts for the HTML report (no scripts, no fonts, no network).

Each function takes plain report data and returns one `<svg>` element as a string;
hovering a mark shows its <title> in any browser.
"""
from __future__ import annotations

import math
from html import escape
from typing import Any

W, H = 860, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 24, 40
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f")


def _kb(n: float) -> str:
    return f"{n / 1024:,.1f} KB" if n >= 1024 else f"{int(n)} B"


def _si(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _svg(body: list[str], label: str, height: int = H) -> str:
    return (f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {W} {height}" '
            f'width="{W}" height="{height}" font-family="sans-serif" font-size="11">'
            f"<title>{escape(label)}</title>{''.join(body)}</svg>")


def _axes(y_max: float, fmt, height: int = H, y_label: str = "") -> list[str]:
    """Left axis with 4 gridlines from 0 to y_max."""
    out = []
    plot_h = height - TOP - BOTTOM
    for k in range(5):
        y = height - BOTTOM - plot_h * k / 4
        out.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{escape(fmt(y_max * k / 4))}</text>')
    if y_label:
        out.append(f'<text x="12" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 12 {TOP + plot_h / 2:.1f})" '
                   f'text-anchor="middle" fill="#333">{escape(y_label)}</text>')
    return out


def memory_chart(profile: dict[str, Any], layer_names: list[str]) -> str:
    """Activation memory over execution order: planned buffers as boxes at their arena offsets,
    the live total as a step line, the peak marked, the planned arena as a dashed line."""
    live: list[int] = profile.get("live_bytes") or [0]
    plan: list[dict] = profile.get("plan") or []
    steps = len(live)
    head = profile.get("planned_bytes") or 0
    y_max = max(max(live), head, 1) * 1.08
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    x = lambda s: LEFT + plot_w * s / steps  # noqa: E731
    y = lambda b: H - BOTTOM - plot_h * b / y_max  # noqa: E731
    body = _axes(y_max, _kb, y_label="bytes")
    for i, p in enumerate(plan):
        color = PALETTE[i % len(PALETTE)]
        body.append(f'<rect x="{x(p["first"]):.1f}" y="{y(p["offset"] + p["bytes"]):.1f}" '
                    f'width="{max(x(p["last"] + 1) - x(p["first"]) - 1, 1):.1f}" '
                    f'height="{max(y(p["offset"]) - y(p["offset"] + p["bytes"]), 0.5):.1f}" fill="{color}" '
                    f'fill-opacity="0.35" stroke="{color}"><title>{escape(p["name"])}: {_kb(p["bytes"])} at offset '
                    f'{p["offset"]:,}, alive steps {p["first"]}-{p["last"]}</title></rect>')
    points = []
    for s, b in enumerate(live):
        points += [f"{x(s):.1f},{y(b):.1f}", f"{x(s + 1):.1f},{y(b):.1f}"]
    body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#222" stroke-width="2"/>')
    if head:
        body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(head):.1f}" y2="{y(head):.1f}" stroke="#c00" '
                    f'stroke-dasharray="6 4"/><text x="{W - RIGHT - 4}" y="{y(head) - 4:.1f}" text-anchor="end" '
                    f'fill="#c00">planned activations {_kb(head)}</text>')
    peak = max(range(steps), key=lambda s: live[s])
    name = layer_names[peak] if peak < len(layer_names) else str(peak)
    px, py = (x(peak) + x(peak + 1)) / 2, y(live[peak])
    body.append(f'<circle class="peak" cx="{px:.1f}" cy="{py:.1f}" r="5" fill="#c00"/>'
                f'<text x="{min(px + 8, W - 200):.1f}" y="{py - 8:.1f}" fill="#c00" font-weight="bold">'
                f'peak {_kb(live[peak])} at step {peak} ({escape(name[:40])})</text>')
    body.append(_x_ticks(steps, x, H))
    return _svg(body, "Activation memory over execution order")


def _x_ticks(steps: int, x, height: int) -> str:
    every = max(1, steps // 12)
    marks = [f'<text x="{(x(s) + x(s + 1)) / 2:.1f}" y="{height - BOTTOM + 14}" text-anchor="middle" fill="#555">{s}</text>'
             for s in range(0, steps, every)]
    marks.append(f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{height - 6}" text-anchor="middle" fill="#333">'
                 "execution step (layer index)</text>")
    return "".join(marks)


def layer_bars(layers: list[dict[str, Any]]) -> str:
    """Per-layer MACs (top panel) and parameters (bottom panel), one bar per layer."""
    n = max(len(layers), 1)
    panel = 150
    height = TOP + 2 * panel + BOTTOM + 20
    plot_w = W - LEFT - RIGHT
    body = []
    for row, (key, color, label) in enumerate((("macs", PALETTE[0], "MACs"), ("params", PALETTE[2], "parameters"))):
        top = TOP + row * (panel + 20)
        values = [layer.get(key) or 0 for layer in layers]
        v_max = max(max(values, default=0), 1)
        body.append(f'<text x="{LEFT}" y="{top - 6}" fill="#333" font-weight="bold">{label} per layer '
                    f'(total {_si(sum(values))})</text>')
        body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{top + panel}" y2="{top + panel}" stroke="#999"/>')
        body.append(f'<text x="{LEFT - 6}" y="{top + 10}" text-anchor="end" fill="#555">{_si(v_max)}</text>')
        for i, (layer, v) in enumerate(zip(layers, values)):
            h = panel * v / v_max
            body.append(f'<rect x="{LEFT + plot_w * i / n + 0.5:.1f}" y="{top + panel - h:.1f}" '
                        f'width="{max(plot_w / n - 1, 0.8):.1f}" height="{h:.1f}" fill="{color}">'
                        f'<title>{i} {escape(layer.get("op", ""))} {escape(layer.get("name", ""))}: '
                        f'{v:,} {label}</title></rect>')
    body.append(_x_ticks(n, lambda s: LEFT + plot_w * s / n, height))
    return _svg(body, "Per-layer MACs and parameters", height)


ARENA_BARS = (("arena_lower_bound_bytes", "lower bound", PALETTE[2]), ("arena_bytes", "measured arena", PALETTE[0]),
              ("arena_default_order_bytes", "converter's order", PALETTE[1]))


def arena_bars(memory: dict[str, Any]) -> str:
    """Horizontal bars: the lower bound (hub.tflite.schedule), the measured arena, the arena in the converter's order."""
    bars = [(label, memory[key], color, f"{memory[key]:,} bytes", _kb(memory[key]))
            for key, label, color in ARENA_BARS if memory.get(key)]
    return _bars(bars, "TFLM arena against its lower bound", row=24, value_room=110)


def op_histogram(counts: dict[str, int]) -> str:
    """Horizontal bars: how many layers of each op."""
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return _bars([(op, count, PALETTE[4], str(count), str(count)) for op, count in items], "Op histogram",
                 row=20, value_room=60)


def _bars(bars: list[tuple[str, float, str, str, str]], label: str, row: int, value_room: int) -> str:
    """One labelled horizontal bar per (name, value, colour, tooltip value, value shown) from the same origin."""
    label_w = 170
    v_max = max((b[1] for b in bars), default=1)
    body = []
    for i, (name, value, color, tip, shown) in enumerate(bars):
        y, w = TOP + i * row, (W - label_w - value_room) * value / v_max
        base = y + row // 2 + 4
        body.append(f'<text x="{label_w - 6}" y="{base}" text-anchor="end" fill="#333">{escape(name)}</text>'
                    f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{color}">'
                    f'<title>{escape(name)}: {escape(tip)}</title></rect>'
                    f'<text x="{label_w + w + 6:.1f}" y="{base}" fill="#333">{escape(shown)}</text>')
    return _svg(body, label, TOP + row * max(len(bars), 1) + 16)


def size_arena_chart(points: list[dict[str, Any]]) -> str:
    """Flatbuffer size (x) against measured arena (y), one colour per model, each point labelled with
    its quantize mode; both axes logarithmic when the figures span more than 20x."""
    marks = [p for p in points if p.get("tflite_bytes") and p.get("arena_bytes")]
    models = list(dict.fromkeys(p["name"] for p in marks))
    height = H + 18 * ((len(models) + 3) // 4)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    x = _Axis([p["tflite_bytes"] for p in marks], LEFT, LEFT + plot_w)
    y = _Axis([p["arena_bytes"] for p in marks], H - BOTTOM, H - BOTTOM - plot_h)
    body = _frame("model size (flash)", "arena (RAM)")
    for value, at in x.ticks:
        body.append(f'<text x="{at:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" fill="#555">{_kb(value)}</text>')
    for value, at in y.ticks:
        body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{at:.1f}" y2="{at:.1f}" stroke="#eee"/>'
                    f'<text x="{LEFT - 6}" y="{at + 4:.1f}" text-anchor="end" fill="#555">{_kb(value)}</text>')
    for p in marks:
        color = PALETTE[models.index(p["name"]) % len(PALETTE)]
        cx, cy = x(p["tflite_bytes"]), y(p["arena_bytes"])
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>{escape(p["name"])} '
                    f'{escape(p["mode"])}: size {_kb(p["tflite_bytes"])}, arena {_kb(p["arena_bytes"])}</title></circle>'
                    f'<text x="{cx + 7:.1f}" y="{cy + 4:.1f}" fill="{color}">{escape(p["mode"])}</text>')
    for i, name in enumerate(models):
        lx, ly = LEFT + (i % 4) * plot_w / 4, H + 4 + 18 * (i // 4)
        body.append(f'<circle cx="{lx + 5:.1f}" cy="{ly:.1f}" r="5" fill="{PALETTE[i % len(PALETTE)]}"/>'
                    f'<text x="{lx + 14:.1f}" y="{ly + 4:.1f}" fill="#333">{escape(name[:32])}</text>')
    return _svg(body, "Model size against arena, per model and quantize mode", height)


def _frame(x_label: str, y_label: str) -> list[str]:
    """The two axis lines of a scatter chart and their labels."""
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    return [f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{H - BOTTOM}" y2="{H - BOTTOM}" stroke="#999"/>',
            f'<line x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{H - BOTTOM}" stroke="#999"/>',
            f'<text x="{LEFT + plot_w / 2}" y="{H - 8}" text-anchor="middle" fill="#333">{escape(x_label)}</text>',
            f'<text x="12" y="{TOP + plot_h / 2:.1f}" transform="rotate(-90 12 {TOP + plot_h / 2:.1f})" '
            f'text-anchor="middle" fill="#333">{escape(y_label)}</text>']


class _Axis:
    """value -> pixel, linear from 0 or logarithmic when the values span more than 20x; with tick values."""

    def __init__(self, values: list[float], start: float, end: float):
        lo, hi = (min(values), max(values)) if values else (1.0, 2.0)
        self.log = hi > 20 * lo
        self.lo, self.hi = (math.log10(lo) - 0.1, math.log10(hi) + 0.1) if self.log else (0.0, hi * 1.1 or 1.0)
        self.start, self.end = start, end
        span = [10 ** (self.lo + (self.hi - self.lo) * k / 4) for k in range(5)] if self.log else \
            [self.hi * k / 4 for k in range(5)]
        self.ticks = [(v, self(v)) for v in span]

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.start + (self.end - self.start) * (v - self.lo) / (self.hi - self.lo)



def pareto_chart(points: list[dict[str, Any]], x_key: str, x_label: str, limit: int | None) -> str:
    """Accuracy (y) against a memory need (x) for every measured candidate of hub optimize --board: the
    Pareto front joined by a line, the board's budget as a dashed line, the chosen candidate ringed."""
    marks = [p for p in points if p.get(x_key) and p.get("accuracy") is not None]
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    x = _Axis([p[x_key] for p in marks] + ([limit] if limit else []), LEFT, LEFT + plot_w)
    lo = min([p["accuracy"] for p in marks] + [1.0])
    y_lo = max(0.0, math.floor(lo * 20) / 20 - 0.05)

    def y(v: float) -> float:
        return H - BOTTOM - plot_h * (v - y_lo) / max(1.0 - y_lo, 1e-9)

    body = _frame(x_label, "accuracy on TFLM")
    for value, at in x.ticks:
        body.append(f'<text x="{at:.1f}" y="{H - BOTTOM + 14}" text-anchor="middle" fill="#555">{_kb(value)}</text>')
    for k in range(5):
        v = y_lo + (1.0 - y_lo) * k / 4
        body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                    f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.2f}</text>')
    if limit:
        body.append(f'<line class="budget" x1="{x(limit):.1f}" x2="{x(limit):.1f}" y1="{TOP}" y2="{H - BOTTOM}" '
                    f'stroke="#b3261e" stroke-dasharray="5,4"/><text x="{x(limit) - 4:.1f}" y="{TOP + 10}" '
                    f'text-anchor="end" fill="#b3261e">board: {_kb(limit)}</text>')
    front = _front(marks, x_key)
    if len(front) > 1:
        path = " ".join(f"{x(p[x_key]):.1f},{y(p['accuracy']):.1f}" for p in front)
        body.append(f'<polyline class="front" points="{path}" fill="none" stroke="#4e79a7" stroke-width="1.5"/>')
    for p in marks:
        color = "#17803d" if p.get("fits") else "#999"
        cx, cy = x(p[x_key]), y(p["accuracy"])
        ring = (f'<circle class="chosen" cx="{cx:.1f}" cy="{cy:.1f}" r="10" fill="none" stroke="#e15759" '
                'stroke-width="2.5"/>') if p.get("chosen") else ""
        body.append(f'{ring}<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}"><title>{escape(p["label"])}: '
                    f'{_kb(p[x_key])}, accuracy {p["accuracy"]:.4f}{", fits" if p.get("fits") else ""}</title></circle>')
    return _svg(body, f"Accuracy against {x_label}, every candidate measured on TFLM")


def _front(points: list[dict[str, Any]], x_key: str) -> list[dict[str, Any]]:
    """The candidates no other beats on both memory and accuracy, by memory."""
    best, front = -1.0, []
    for p in sorted(points, key=lambda p: (p[x_key], -p["accuracy"])):
        if p["accuracy"] > best:
            front.append(p)
            best = p["accuracy"]
    return front


def layer_error_chart(profile: dict[str, Any]) -> str:
    """Per-layer error (hub.verify.layer_error) over the ops in execution order: 1 - cosine on a log axis, as
    converted (the error accumulated there) as a line, each op quantized alone as dots; the worst ops named."""
    layers = profile.get("layers") or []
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    floor = 1e-6  # 1 - cosine below this is float rounding; it sits on the axis

    def loss(cosine: float | None) -> float:
        return max(1.0 - cosine, floor) if cosine is not None else floor

    top = max([loss(la["cosine"]) for la in layers] + [loss(la["isolated_cosine"]) for la in layers] + [1e-2])
    decades = max(1, math.ceil(math.log10(top / floor)))

    def y(value: float) -> float:
        return H - BOTTOM - plot_h * math.log10(value / floor) / decades

    def x(i: int) -> float:
        return LEFT + plot_w * (i + 0.5) / max(len(layers), 1)

    body = _frame("op, in execution order", "1 - cosine (log)")
    for k in range(decades + 1):
        v = floor * 10**k
        body.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>'
                    f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#555">{v:.0e}</text>')
    if layers:
        path = " ".join(f"{x(i):.1f},{y(loss(la['cosine'])):.1f}" for i, la in enumerate(layers))
        body.append(f'<polyline points="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>')
    worst = set(profile.get("worst", []))
    for i, la in enumerate(layers):
        alone = la.get("isolated_cosine")
        if alone is None:  # not measured alone (the warning's time budget): no dot rather than one at zero error
            continue
        tip = (f"op #{la['op_index']} {la['op']}: cosine {la['cosine']:.4f} as converted, {alone:.4f} alone; "
               f"{la['tensor']}")
        color = PALETTE[3] if la["op_index"] in worst else PALETTE[1]
        body.append(f'<circle cx="{x(i):.1f}" cy="{y(loss(alone)):.1f}" r="3.5" fill="{color}">'
                    f"<title>{escape(tip)}</title></circle>")
        if la["op_index"] in worst:
            body.append(f'<text x="{x(i) + 5:.1f}" y="{y(loss(alone)) - 5:.1f}" fill="{PALETTE[3]}">'
                        f"#{la['op_index']} {escape(la['op'])}</text>")
    measured = sum(la.get("isolated_cosine") is not None for la in layers)
    some = f" ({measured} of {len(layers)} ops)" if measured < len(layers) else ""
    body.append(f'<text x="{W - RIGHT}" y="{TOP - 8}" text-anchor="end" fill="#555"><tspan fill="{PALETTE[0]}">'
                f'&#8212; as converted</tspan>  <tspan fill="{PALETTE[1]}">&#9679; this op alone quantized{some}'
                '</tspan></text>')
    return _svg(body, f"Per-layer error on {profile.get('samples', 0)} held-out samples ({profile.get('quantize', '')})")
