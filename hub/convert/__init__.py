"""Convert stage: the normalised ONNX -> one TFLite variant through onnx2tf, in a child process."""
