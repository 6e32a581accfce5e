"""hub optimize: pruning, distillation, clustering, QAT and the board search, measured on TFLM."""
