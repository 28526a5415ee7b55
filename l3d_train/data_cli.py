"""`l3d data`: dataset import. `l3d data import-stereolunar SRC OUT` converts StereoLunar."""
import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='what', required=True)
    s = sub.add_parser('import-stereolunar', help='StereoLunar -> rectified pair folders')
    s.add_argument('src', type=Path, help='StereoLunar root (split .npz + scene folders)')
    s.add_argument('out', type=Path, help='dataset folder to write pair folders into')
    s.add_argument('--split', default='split.npz', help='split file under SRC (default: '
                   'split.npz; the README trains from split_file=split.npz)')
    s.add_argument('--limit', type=int, help='convert only the first N pairs')


def run(args: argparse.Namespace) -> int:
    from l3d_train.stereolunar import import_stereolunar
    written = import_stereolunar(args.src, args.out, args.split, args.limit)
    print(f'wrote {len(written)} pair folders to {args.out}')
    return 0
