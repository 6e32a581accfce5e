"""hub check: what TFLM will refuse, node by node, before any conversion; per-layer cost estimates."""
