"""MASt3R teacher: our implementation of the official architecture, safe checkpoint loading and
a stereo-pair depth helper. `load_mast3r(path)` is the entry point (INTERFACES.md section 7)."""
from l3d_train.mast3r.checkpoint import load_mast3r, parse_constructor, save_safetensors
from l3d_train.mast3r.model import MASt3R, MASt3RConfig

__all__ = ['MASt3R', 'MASt3RConfig', 'load_mast3r', 'parse_constructor', 'save_safetensors']
