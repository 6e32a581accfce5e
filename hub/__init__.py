"""hub: from a trained PyTorch, Keras or ONNX model to a model proven on TensorFlow Lite Micro."""
__version__ = "0.1.0"
