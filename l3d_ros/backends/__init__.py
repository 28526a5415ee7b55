"""Depth backends: (left, right, calib) -> DepthResult. `make_backend` picks one by name."""
from l3d_ros.backends.base import DepthBackend, DepthResult, finalize, to_gray01
from l3d_ros.config import package_root, StereoNodeConfig


def make_backend(name: str, cfg: StereoNodeConfig) -> DepthBackend:
    """The backend called `name` ('sgbm' or 'student'), configured from `cfg`.

    Raises ValueError for an unknown name and FileNotFoundError / ValueError when the student's
    model is missing or fails its sha256 check (the caller then falls back to SGBM).
    """
    if name == 'sgbm':
        from l3d_ros.backends.sgbm import SgbmBackend
        return SgbmBackend(cfg.sgbm, cfg.depth_min_m, cfg.depth_max_m, cfg.subpixel_window_px)
    if name == 'student':
        from l3d_ros.backends.onnx_student import OnnxStudentBackend
        return OnnxStudentBackend.from_manifest(package_root(), cfg.student,
                                                cfg.subpixel_window_px)
    raise ValueError(f'backend={name!r}: expected sgbm or student')


__all__ = ['DepthBackend', 'DepthResult', 'finalize', 'make_backend', 'to_gray01']
