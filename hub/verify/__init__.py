"""Verify stage: the .tflite run on the real TFLM interpreter, measured, and judged against its source."""
