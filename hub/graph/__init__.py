"""Graph stage: any adapter's ONNX normalised (static shapes, exact passes), then rewritten for TFLM."""
