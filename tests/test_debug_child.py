"""`hub --debug` on a failure inside the converter child shows the child's own traceback (where onnx2tf stopped),
after hub's, and still ends on the same one line; without --debug, neither."""
from __future__ import annotations

from hub.child import ChildResult
from tests.conftest import one_node_onnx, run_hub


def test_debug_shows_the_converter_childs_traceback(tmp_path):
    path = one_node_onnx(tmp_path / "erfc.onnx", "Erfc", name="gelu/Erfc")  # onnx2tf has no converter for Erfc
    proc = run_hub("--debug", "convert", path, "--out", tmp_path / "out")
    assert proc.returncode == 1, proc.stderr[-2000:]
    hub_part, _, child_part = proc.stderr.partition("--- the child process's stderr, from its traceback ---")
    assert "hub/api.py" in hub_part and "Traceback" in hub_part
    assert "hub/convert/worker.py" in child_part and "onnx2tf" in child_part and "onnx2tf.ops.Erfc" in child_part
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("hub: error:") and "gelu/Erfc (Erfc)" in last


def test_a_childs_traceback_is_its_last_one_with_what_came_before_it():
    stderr = "\n".join(["noise"] * 100 + ["onnx2tf: ERROR at node x", "Traceback (most recent call last):",
                                           '  File "w.py", line 1', "ValueError: bad"])
    shown = ChildResult(1, "", stderr).traceback()
    assert shown.endswith("ValueError: bad") and "onnx2tf: ERROR at node x" in shown and shown.count("noise") < 100
    assert ChildResult(1, "", "\n".join(f"line {i}" for i in range(200))).traceback().count("line") == 60
