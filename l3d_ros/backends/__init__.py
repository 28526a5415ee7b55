"""Depth backends: (left, right, calib) -> DepthResult."""
