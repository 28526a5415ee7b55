"""Regenerate test/fixtures/mast3r_tiny/ with the OFFICIAL MASt3R code (not part of this repo).

    python scripts/make_mast3r_fixture.py /path/to/mast3r [--out test/fixtures/mast3r_tiny]

`/path/to/mast3r` is a checkout of github.com/naver/mast3r with its submodules (dust3r, and
dust3r's croco) populated; its Python needs torch, einops and huggingface_hub (>= 0.22), which
this project does not depend on, so run it from a separate virtualenv. No official code is
copied here: it is imported at run time.

It builds a reduced AsymmetricMASt3R (RoPE100, ManyAR_PatchEmbed, catmlp+dpt, two_confs) with
seeded random weights, saves it in the official checkpoint layout (mast3r_tiny.pth: {'model':
state_dict, 'args': Namespace(model=constructor string)}), reloads it with the official
`load_model` and stores inputs and outputs of two cases in io.npz:
  land_*: a batch of 2 landscape pairs 48x64; port_*: one portrait pair 64x48.
The official head factory fixes the DPT widths (256 features, layers 96/192/384/768), which
would make a ~150 MB fixture; they are shrunk here by wrapping the official DPT adapter's
__init__ (FEATURE_DIM, LAYER_DIMS below). Our loader reads these widths from the tensors.
"""
import argparse
from pathlib import Path
import sys

import numpy as np
import torch

FEATURE_DIM, LAYER_DIMS = 16, [8, 16, 24, 32]
KWARGS = dict(enc_depth=2, dec_depth=10, enc_embed_dim=32, dec_embed_dim=24, enc_num_heads=4,
              dec_num_heads=2, pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed',
              img_size=(64, 64), head_type='catmlp+dpt', output_mode='pts3d+desc4',
              depth_mode=('exp', -float('inf'), float('inf')), conf_mode=('exp', 1, float('inf')),
              two_confs=True, desc_conf_mode=('exp', 0, float('inf')))


def constructor_string() -> str:
    """The official `args.model` form, e.g. "AsymmetricMASt3R(enc_depth=2, ...)"."""
    return 'AsymmetricMASt3R(' + ', '.join(f'{k}={v!r}' for k, v in KWARGS.items()) + ')'


def shrink_official_dpt() -> None:
    from models.dpt_block import DPTOutputAdapter  # croco, on sys.path after importing mast3r
    official_init = DPTOutputAdapter.__init__

    def init(self, *args, **kwargs):
        kwargs.update(feature_dim=FEATURE_DIM, last_dim=FEATURE_DIM // 2, layer_dims=LAYER_DIMS)
        official_init(self, *args, **kwargs)
    DPTOutputAdapter.__init__ = init


def randomise(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Perturb every parameter (norm gains and biases included) so no term is trivially 0/1."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            scale = 0.1 if p.ndim == 1 else 0.5 * float(p.std()) + 0.01
            p.add_(scale * torch.randn(p.shape, generator=gen))


def views(rng: np.random.Generator, b: int, h: int, w: int, first: int) -> list[dict]:
    """Two views of b smooth random images in [-1, 1] with distinct instance ids."""
    out = []
    for v in range(2):
        coarse = rng.uniform(-1, 1, (b, 3, h // 8, w // 8)).astype(np.float32)
        img = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(h, w),
                                              mode='bilinear', align_corners=False)
        img = (img + 0.2 * torch.from_numpy(rng.normal(size=(b, 3, h, w)).astype(np.float32)))
        out.append({'img': img.clamp(-1, 1), 'true_shape': torch.tensor([[h, w]] * b),
                    'instance': [str(first + 2 * i + v) for i in range(b)]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('mast3r', type=Path, help='official mast3r checkout with submodules')
    parser.add_argument('--out', type=Path, default=Path('test/fixtures/mast3r_tiny'))
    args = parser.parse_args()
    sys.path.insert(0, str(args.mast3r.resolve()))
    from mast3r.model import AsymmetricMASt3R, load_model
    shrink_official_dpt()

    torch.manual_seed(0)
    net = AsymmetricMASt3R(**KWARGS)
    randomise(net, torch.Generator().manual_seed(1))
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / 'mast3r_tiny.pth'
    torch.save({'model': net.state_dict(), 'args': argparse.Namespace(model=constructor_string())},
               ckpt_path)

    official = load_model(str(ckpt_path), 'cpu', verbose=False).eval()
    rng = np.random.default_rng(2)
    arrays = {}
    for case, (b, h, w) in {'land': (2, 48, 64), 'port': (1, 64, 48)}.items():
        view1, view2 = views(rng, b, h, w, first=10 * len(arrays))
        with torch.no_grad():
            res1, res2 = official(view1, view2)
        for i, view in ((1, view1), (2, view2)):
            arrays[f'{case}_img{i}'] = view['img'].numpy()
            arrays[f'{case}_true_shape{i}'] = view['true_shape'].numpy()
        for i, res in ((1, res1), (2, res2)):
            for key, value in res.items():
                arrays[f'{case}_res{i}_{key}'] = value.numpy()
                print(f'{case} res{i} {key:20s} {tuple(value.shape)} '
                      f'|x| median {value.abs().median():.3g} max {value.abs().max():.3g}')
    np.savez_compressed(args.out / 'io.npz', **arrays)
    for path in sorted(args.out.iterdir()):
        print(f'{path}: {path.stat().st_size / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
