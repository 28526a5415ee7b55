"""Student architectures as small frozen configs, and the named family used by the ablation.

A student maps a rectified grey pair, each (B, 1, H, W) in [0, 1] at the fixed `input_size`, to
the left view's disparity [px at input resolution] and confidence (0..1), both (B, 1, H, W).
Metric depth is never learned: the runtime computes depth = fx_in * baseline / disparity with
fx_in the focal length scaled to the input size, so the known baseline sets the scale.
"""
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class StudentSpec:
    """One student (or a family teacher, the same architecture at larger widths)."""

    name: str = 'flight'
    encoder: str = 'vit'                    # vit | cnn (MobileNetV2-style inverted residuals)
    enc_dim: int = 96                       # token width of the encoder output
    enc_depth: int = 4                      # ViT blocks, or inverted-residual blocks per stage
    enc_heads: int = 4
    dec_dim: int = 64                       # residual width of the cross-attention decoder
    dec_depth: int = 2
    dec_heads: int = 4                      # = the teacher's, so SVD init maps head by head
    mlp_ratio: float = 4.0
    patch_size: int = 16                    # encoder stride [px]; tokens are (H/p) x (W/p)
    input_size: tuple[int, int] = (256, 256)  # (height, width) the network runs at [px]
    corr: bool = True                       # plane-sweep correlation stem (stereo prior)
    max_disp_px: int = 40                   # matching range [px at input size]; 23 at 30 m
    stem_dim: int = 12                      # channels of the stride-2 conv stem
    head_dim: int = 16                      # channels of the stride-2 refinement head

    def __post_init__(self):
        def bad(field, expected):
            return ValueError(f'{field}={getattr(self, field)!r}: expected {expected}')
        if self.encoder not in ('vit', 'cnn'):
            raise bad('encoder', "'vit' or 'cnn'")
        for dim, heads, label in ((self.enc_dim, self.enc_heads, 'enc'),
                                  (self.dec_dim, self.dec_heads, 'dec')):
            if dim % heads or (dim // heads) % 4:
                raise ValueError(f'{label}_dim={dim}, {label}_heads={heads}: expected a head '
                                 'dimension that is a multiple of 4 (2-D RoPE)')
        if any(s % self.patch_size for s in self.input_size):
            raise bad('input_size', f'multiples of patch_size={self.patch_size}')
        if self.patch_size % 2 or self.patch_size < 4:
            raise bad('patch_size', 'an even number >= 4')
        if self.max_disp_px % 2 or self.max_disp_px < 4:
            raise bad('max_disp_px', 'an even number >= 4')

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> 'StudentSpec':
        raw = dict(raw)
        raw['input_size'] = tuple(raw.get('input_size', cls.input_size))
        return cls(**raw)


# A family-architecture teacher (data.cache_teacher, tests); `l3d distill` distils from MASt3R.
TEACHER = StudentSpec(name='teacher', enc_dim=128, enc_depth=4, enc_heads=4, dec_dim=128,
                      dec_depth=3, dec_heads=4, head_dim=24)
FLIGHT = StudentSpec()
FAMILY = {
    'flight': FLIGHT,                                            # ViT-T encoder, small decoder
    'vit-l-enc': replace(FLIGHT, name='vit-l-enc', enc_dim=128, enc_depth=6),
    'vit-l-dec': replace(FLIGHT, name='vit-l-dec', dec_dim=128, dec_depth=3),
    'cnn': replace(FLIGHT, name='cnn', encoder='cnn'),
    'vit-nocorr': replace(FLIGHT, name='vit-nocorr', corr=False),
}


def get_spec(name: str) -> StudentSpec:
    if name == 'teacher':
        return TEACHER
    if name not in FAMILY:
        raise ValueError(f'student={name!r}: expected one of {sorted(FAMILY)} or teacher')
    return FAMILY[name]
