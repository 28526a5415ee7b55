"""`l3d export CKPT --out models/`: a student checkpoint -> ONNX (opset 17) + manifest entry.

The graph has a fixed input size (the spec's), inputs `left`, `right` (1, 1, h, w) grey in
[0, 1] and outputs `disparity_px`, `confidence` (1, 1, h, w); see l3d_ros.backends.onnx_student
for how the runtime turns them into metric depth. models/manifest.json (INTERFACES.md section 8)
gets one entry per model name, replaced on re-export; with the training pairs at hand it
records their mean grey level (`input_mean`), to which the runtime matches each pair's exposure.
"""
import argparse
import json
from pathlib import Path
import warnings

import torch
from torch import nn

from l3d_ros.backends.onnx_student import file_sha256, MANIFEST_FORMAT
from l3d_train.students import count_flops, count_params, StereoStudent

OPSET = 17
NORMALISATION = ('inputs: grey levels in [0, 1] (uint8 / 255, uint16 / 65535, RGB -> BT.601 '
                 'luma), area-resized to input_size; the graph maps them to [-1, 1]')
OUTPUT_NOTE = ('disparity_px: left-view disparity in pixels of the input width; depth_m = '
               'fx * baseline_m / (disparity_px * W / w) with the pair calibration at W x H; '
               'confidence: probability that the disparity is within 5 % of the target')


class _Exported(nn.Module):
    def __init__(self, model: StereoStudent):
        super().__init__()
        self.model = model

    def forward(self, left: torch.Tensor, right: torch.Tensor):
        res = self.model(left, right)
        return res['disp'], res['conf']


def export_onnx(model: StereoStudent, path: Path) -> Path:
    """Write `model` as ONNX at its fixed input size (legacy TorchScript exporter, opset 17)."""
    h, w = model.spec.input_size
    x = torch.zeros(1, 1, h, w)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(_Exported(model.eval()), (x, x), str(path), dynamo=False,
                          opset_version=OPSET, input_names=['left', 'right'],
                          output_names=['disparity_px', 'confidence'], do_constant_folding=True)
    return path


def training_input_mean(dataset: Path) -> float:
    """Mean grey level of a training set's pairs (the mean of each pair's two image means),
    as the runtime normalises them: the `input_mean` the student's exposure is matched to."""
    from l3d_ros.backends import to_gray01
    from l3d_ros.backends.onnx_student import pair_mean
    from l3d_ros.dataset import list_pairs, read_pair
    means = []
    for folder in list_pairs(Path(dataset)):
        pair = read_pair(folder, with_truth=False)
        means.append(pair_mean(to_gray01(pair.left), to_gray01(pair.right)))
    if not means:
        raise ValueError(f'{dataset}: no pairs to take the input mean from')
    return round(float(sum(means) / len(means)), 4)


def manifest_entry(model: StereoStudent, onnx_path: Path, name: str, meta: dict) -> dict:
    """The manifest record of an exported model; `meta` adds recipe, teacher, eval figures
    (and `input_mean`, see `training_input_mean`)."""
    return {'name': name, 'file': Path(onnx_path).name, 'sha256': file_sha256(onnx_path),
            'size_bytes': Path(onnx_path).stat().st_size, 'opset': OPSET,
            'input_size': list(model.spec.input_size), 'inputs': ['left', 'right'],
            'outputs': ['disparity_px', 'confidence'], 'normalisation': NORMALISATION,
            'output_semantics': OUTPUT_NOTE, 'params': count_params(model),
            'flops_per_pair': count_flops(model), 'spec': model.spec.to_dict(), **meta}


def update_manifest(models_dir: Path, entry: dict, default: bool = True) -> Path:
    """Insert or replace `entry` (by name) in models_dir/manifest.json."""
    path = Path(models_dir) / 'manifest.json'
    manifest = (json.loads(path.read_text()) if path.is_file()
                else {'format': MANIFEST_FORMAT, 'models': []})
    manifest['models'] = [m for m in manifest['models'] if m['name'] != entry['name']] + [entry]
    if default or 'default' not in manifest:
        manifest['default'] = entry['name']
    path.write_text(json.dumps(manifest, indent=2) + '\n')
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('checkpoint', type=Path, help='student .safetensors (+ .json sidecar)')
    parser.add_argument('--out', type=Path, default=Path('models'), help='models folder')
    parser.add_argument('--name', default=None, help='model name (default: the spec name)')
    parser.add_argument('--train', type=Path, default=None,
                        help='training pairs for input_mean (default: the checkpoint\'s data)')


def run(args: argparse.Namespace) -> int:
    from l3d_train.distill import load_checkpoint
    model, meta = load_checkpoint(args.checkpoint)
    name = args.name or model.spec.name
    onnx_path = export_onnx(model, args.out / f'{name}.onnx')
    keep = {k: meta[k] for k in ('recipe', 'teacher', 'eval', 'data') if k in meta}
    train = args.train or meta.get('data', {}).get('train')     # '' / None: not recorded
    if train and Path(train).is_dir():
        keep['input_mean'] = training_input_mean(Path(train))
    path = update_manifest(args.out, manifest_entry(model, onnx_path, name, keep))
    print(f'{onnx_path} ({onnx_path.stat().st_size / 1e6:.2f} MB) listed in {path}')
    return 0
