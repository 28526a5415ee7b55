"""Validated training parameters, read from `l3d_train: ros__parameters:` in lunar_stereo.yaml.

`teacher.model` sizes the reduced-width MASt3R trained from scratch (no `--init`);
`teacher.train` holds the optimiser, loss and schedule defaults of `l3d train teacher`.
"""
from dataclasses import dataclass, field
import math
from pathlib import Path

from l3d_ros.config import check, load_section
from l3d_train.mast3r import MASt3RConfig

TRAIN_NODE_NAME = 'l3d_train'


def _int_in(name: str, value, lo: int, hi: int) -> None:
    check(isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
          name, value, f'an integer in [{lo}, {hi}]')


@dataclass(frozen=True)
class TeacherModelConfig:
    """Reduced MASt3R: the official field names of MASt3RConfig, at smaller widths/depths."""

    img_size: tuple[int, int] = (256, 256)   # (H, W) training size [px], multiples of 16
    enc_embed_dim: int = 192
    enc_depth: int = 6
    enc_num_heads: int = 3
    dec_embed_dim: int = 128
    dec_depth: int = 10              # DPT hooks decoder layers depth/2, 3 depth/4 and depth
    dec_num_heads: int = 4
    dpt_feature_dim: int = 64        # RefineNet width (official: 256)
    dpt_layer_dims: tuple[int, int, int, int] = (32, 64, 128, 128)  # official: 96..768
    desc_dim: int = 24               # local descriptor width (frozen: no matching loss here)

    def __post_init__(self):
        p = 'teacher.model.'
        check(len(self.img_size) == 2 and all(isinstance(s, int) and s >= 32 and s % 16 == 0
                                              for s in self.img_size),
              p + 'img_size', self.img_size, '(H, W), multiples of 16 pixels >= 32')
        for name, hi in (('enc_embed_dim', 2048), ('dec_embed_dim', 2048),
                         ('enc_depth', 48), ('dec_depth', 48), ('enc_num_heads', 64),
                         ('dec_num_heads', 64), ('dpt_feature_dim', 1024), ('desc_dim', 256)):
            _int_in(p + name, getattr(self, name), 1, hi)
        check(self.dec_depth >= 4, p + 'dec_depth', self.dec_depth,
              '>= 4 (the DPT hooks 4 distinct layers: 0, depth/2, 3 depth/4, depth)')
        check(len(self.dpt_layer_dims) == 4 and all(isinstance(c, int) and c > 0
                                                    for c in self.dpt_layer_dims),
              p + 'dpt_layer_dims', self.dpt_layer_dims, '4 positive integers')
        self.mast3r()                    # head-dimension checks live in MASt3RConfig

    def mast3r(self) -> MASt3RConfig:
        """The MASt3RConfig of this reduced teacher (plain patch embedding, fixed size)."""
        return MASt3RConfig(
            img_size=tuple(self.img_size), enc_embed_dim=self.enc_embed_dim,
            enc_depth=self.enc_depth, enc_num_heads=self.enc_num_heads,
            dec_embed_dim=self.dec_embed_dim, dec_depth=self.dec_depth,
            dec_num_heads=self.dec_num_heads, landscape_only=False,
            output_mode=f'pts3d+desc{self.desc_dim}', dpt_feature_dim=self.dpt_feature_dim,
            dpt_layer_dims=tuple(self.dpt_layer_dims))


@dataclass(frozen=True)
class TeacherTrainConfig:
    """Defaults of `l3d train teacher` (each has a command-line override where it matters)."""

    steps: int = 2000
    batch: int = 4                   # global batch (split over DDP processes) [pairs]
    lr: float = 1e-4                 # peak AdamW learning rate
    min_lr_ratio: float = 0.01       # cosine decay ends at lr * this
    warmup_frac: float = 0.05        # linear warm-up over this fraction of the steps
    weight_decay: float = 0.05
    conf_alpha: float = 0.2          # DUSt3R ConfLoss: conf * l - alpha * log(conf)
    norm_mode: str = 'avg_dis'       # avg_dis: scale-invariant (DUSt3R) | metric
    seed: int = 0
    save_every: int = 200            # checkpoint period [steps]
    workers: int = 0                 # DataLoader worker processes
    grad_clip: float = 1.0           # max gradient norm; 0 disables

    def __post_init__(self):
        p = 'teacher.train.'
        _int_in(p + 'steps', self.steps, 1, 10**9)
        _int_in(p + 'batch', self.batch, 1, 4096)
        for name in ('lr', 'conf_alpha'):
            value = getattr(self, name)
            check(isinstance(value, (int, float)) and math.isfinite(value) and value > 0,
                  p + name, value, 'a finite number > 0')
        check(0.0 <= self.min_lr_ratio <= 1.0, p + 'min_lr_ratio', self.min_lr_ratio, '[0, 1]')
        check(0.0 <= self.warmup_frac < 1.0, p + 'warmup_frac', self.warmup_frac, '[0, 1)')
        check(self.weight_decay >= 0, p + 'weight_decay', self.weight_decay, '>= 0')
        check(self.norm_mode in ('avg_dis', 'metric'), p + 'norm_mode', self.norm_mode,
              "'avg_dis' or 'metric'")
        _int_in(p + 'seed', self.seed, 0, 2**31 - 1)
        _int_in(p + 'save_every', self.save_every, 1, 10**9)
        _int_in(p + 'workers', self.workers, 0, 64)
        check(self.grad_clip >= 0, p + 'grad_clip', self.grad_clip, '>= 0 (0 disables)')


@dataclass(frozen=True)
class TeacherConfig:
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)
    train: TeacherTrainConfig = field(default_factory=TeacherTrainConfig)


@dataclass(frozen=True)
class TrainParams:
    """Everything under `l3d_train: ros__parameters:`."""

    teacher: TeacherConfig = field(default_factory=TeacherConfig)


def load_train_config(path: Path | None = None) -> TrainParams:
    """The `l3d_train` section of the parameter file (default: the package's), validated."""
    return load_section(TrainParams, TRAIN_NODE_NAME, path)


__all__ = ['TeacherModelConfig', 'TeacherTrainConfig', 'TeacherConfig', 'TrainParams',
           'load_train_config', 'TRAIN_NODE_NAME']
