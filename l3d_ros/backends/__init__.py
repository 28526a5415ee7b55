"""Depth backends: (left, right, calib) -> DepthResult. `make_backend` picks one by name."""
