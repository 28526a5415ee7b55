"""Teacher (MASt3R), students, distillation, evaluation and ONNX export (torch)."""
