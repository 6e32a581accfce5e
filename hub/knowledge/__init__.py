"""Knowledge as data: what TFLite Micro's kernels accept and what onnx2tf emits, each row citing its source."""
