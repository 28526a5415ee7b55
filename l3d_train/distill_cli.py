"""`l3d distill run|flight|ablate`: train students, ship the flight student, ablation table.

Data: simulator datasets rendered with `l3d sim dataset` (train seed and held-out eval seed
differ, so evaluation terrains are never trained on), or existing folders (--train/--eval).
The teacher is the reduced family teacher trained on dense ground truth (no MASt3R teacher
training command exists in this build); the manifest and the table say so.
"""
import argparse
from dataclasses import replace
import json
import logging
from pathlib import Path
import platform
import sys
import timeit

import numpy as np
import torch

from l3d_ros.backends.onnx_student import disparity_to_result, file_sha256, OnnxStudentBackend
from l3d_ros.backends.onnx_student import resize_to
from l3d_ros.config import load_node_config
from l3d_ros.dataset import list_pairs
from l3d_ros.evaluate import evaluate
from l3d_ros.infer import DepthSource
from l3d_train.data import cache_teacher, PairDataset
from l3d_train.distill import load_checkpoint, RECIPES, train
from l3d_train.export import export_onnx, manifest_entry, update_manifest
from l3d_train.students import count_flops, count_params, get_spec, TEACHER

log = logging.getLogger(__name__)
TRAIN_SEED, EVAL_SEED = 1, 2


class TorchBackend:
    """A torch student behind the runtime's pre/post-processing (evaluation of unexported
    models, e.g. the teacher)."""

    name = 'torch'

    def __init__(self, model):
        self.model = model.eval()

    @torch.no_grad()
    def compute(self, left01, right01, calib):
        size = self.model.spec.input_size
        x = [torch.from_numpy(resize_to(img, size))[None, None] for img in (left01, right01)]
        res = self.model(*x)
        return disparity_to_result(res['disp'][0, 0].numpy(), res['conf'][0, 0].numpy(), calib)


def _source(backend) -> DepthSource:
    src = DepthSource('oracle', load_node_config())
    src.name, src.backend = getattr(backend, 'name', 'student'), backend
    return src


def eval_backend(backend, dataset: Path, stride: int) -> dict:
    """`l3d eval`'s metrics of an in-memory backend on `dataset` (+ hazard_f1)."""
    m = evaluate(dataset, _source(backend) if backend != 'sgbm' else
                 DepthSource('sgbm', load_node_config()), stride)
    keys = ('n_pairs', 'abs_rel', 'rmse_m', 'delta_1_25', 'completeness', 'hazard_precision',
            'hazard_recall', 'hazard_f1', 'latency_ms_median')
    return {k: m.get(k) for k in keys}


def onnx_latency_ms(backend: OnnxStudentBackend, threads: int = 2) -> float:
    """Best-of-5 mean of 10 ONNX runs at the model's input size, this CPU."""
    h, w = backend.input_size
    rng = np.random.default_rng(0)
    a, b = rng.random((h, w), np.float32), rng.random((h, w), np.float32)
    backend.infer(a, b)
    return 1e3 * min(timeit.repeat(lambda: backend.infer(a, b), number=10, repeat=5)) / 10


def ensure_data(args) -> tuple[Path, Path]:
    """Train and held-out eval datasets: given, or rendered by the simulator into --work."""
    from l3d_ros.cli import main as l3d
    train_dir = args.train or args.work / f'train_s{TRAIN_SEED}_n{args.pairs}'
    eval_dir = args.eval or args.work / f'eval_s{EVAL_SEED}_n{args.eval_pairs}'
    for folder, seed, n in ((train_dir, TRAIN_SEED, args.pairs),
                            (eval_dir, EVAL_SEED, args.eval_pairs)):
        if not folder.is_dir():
            if l3d(['sim', 'dataset', str(folder), '--pairs', str(n), '--seed', str(seed)]):
                raise RuntimeError(f'l3d sim dataset {folder} failed')
    return train_dir, eval_dir


def ensure_teacher(args, train_dir: Path):
    """The reduced teacher (dense ground truth), trained once and reused from --work."""
    ckpt = args.work / 'teacher.safetensors'
    if ckpt.is_file():
        return load_checkpoint(ckpt)[0]
    data = PairDataset(list_pairs(train_dir), TEACHER.input_size, seed=TRAIN_SEED)
    model, _ = train(TEACHER, replace(RECIPES['dense-gt'], steps=args.teacher_steps,
                                      batch=args.batch), data, ckpt.with_suffix(''))
    return model


def distill_one(args, student: str, recipe: str, teacher, train_dir: Path, cache: Path,
                seed: int = 0):
    spec = get_spec(student)
    rec = replace(RECIPES[recipe], steps=args.steps, batch=args.batch, seed=seed)
    data = PairDataset(list_pairs(train_dir), spec.input_size,
                       teacher_cache=cache if rec.target == 'teacher' else None,
                       sparse_fraction=rec.sparse_fraction, seed=TRAIN_SEED)
    out = args.work / 'runs' / f'{student}__{recipe}__s{seed}'
    return train(spec, rec, data, out, teacher=teacher)


def teacher_record(teacher) -> dict:
    return {'kind': 'reduced family teacher (l3d_train.students TEACHER spec)',
            'trained_on': 'dense simulator ground truth (recipe dense-gt)',
            'params': count_params(teacher), 'flops_per_pair': count_flops(teacher),
            'note': 'not MASt3R: no `l3d train teacher` existed when this model was made'}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='action', required=True)
    for name, text in (('flight', 'train + export the default flight student (make model)'),
                       ('ablate', 'students x recipes table (docs/ablation.md + .json)'),
                       ('run', 'one student with one recipe')):
        p = sub.add_parser(name, help=text)
        default_out = Path('docs' if name == 'ablate' else 'models')
        p.add_argument('--out', type=Path, default=default_out)
        p.add_argument('--work', type=Path, default=Path('out/distill'),
                       help='datasets, teacher, runs and caches (reused when present)')
        p.add_argument('--train', type=Path, default=None, help='training dataset folder')
        p.add_argument('--eval', type=Path, default=None, help='held-out dataset folder')
        p.add_argument('--pairs', type=int, default=96, help='training pairs to render')
        p.add_argument('--eval-pairs', type=int, default=12, help='held-out pairs to render')
        p.add_argument('--steps', type=int, default=400 if name == 'flight' else 120)
        p.add_argument('--teacher-steps', type=int, default=400)
        p.add_argument('--batch', type=int, default=2)
        p.add_argument('--stride', type=int, default=2, help='hazard evaluation stride')
        if name == 'run':
            p.add_argument('--student', default='flight')
            p.add_argument('--recipe', default='feature+svd', choices=sorted(RECIPES))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    args.work.mkdir(parents=True, exist_ok=True)
    train_dir, eval_dir = ensure_data(args)
    teacher = ensure_teacher(args, train_dir)
    cache = cache_teacher(teacher, list_pairs(train_dir), args.work / 'teacher_cache')
    if args.action == 'run':
        model, meta = distill_one(args, args.student, args.recipe, teacher, train_dir, cache)
        print(json.dumps(meta['final_loss']))
        return 0
    if args.action == 'flight':
        return _flight(args, teacher, train_dir, eval_dir, cache)
    return _ablate(args, teacher, train_dir, eval_dir, cache)


def _flight(args, teacher, train_dir, eval_dir, cache) -> int:
    model, meta = distill_one(args, 'flight', 'feature+svd', teacher, train_dir, cache)
    onnx_path = export_onnx(model, args.out / 'flight.onnx')
    backend = OnnxStudentBackend(onnx_path, file_sha256(onnx_path), model.spec.input_size)
    figures = {'dataset': str(eval_dir), 'eval_seed': EVAL_SEED,
               'student': eval_backend(backend, eval_dir, args.stride),
               'teacher': eval_backend(TorchBackend(teacher), eval_dir, args.stride),
               'sgbm': eval_backend('sgbm', eval_dir, args.stride),
               'onnx_latency_ms_2threads': round(onnx_latency_ms(backend), 1),
               'machine': f'{platform.machine()} {platform.processor() or ""}'.strip()}
    data = {'train_seed': TRAIN_SEED, 'train_pairs': args.pairs, 'eval_seed': EVAL_SEED,
            'eval_pairs': args.eval_pairs, 'steps': args.steps,
            'teacher_steps': args.teacher_steps, 'batch': args.batch,
            'command': 'l3d distill ' + ' '.join(sys.argv[2:])}
    entry = manifest_entry(model, onnx_path, 'flight',
                           {'recipe': meta['recipe'], 'svd_init': meta['svd_init'],
                            'teacher': teacher_record(teacher), 'eval': figures, 'data': data,
                            'train_wall_s': meta['train_wall_s']})
    path = update_manifest(args.out, entry)
    print(json.dumps(figures, indent=2))
    print(f'wrote {onnx_path} and {path}')
    return 0


# (student, recipe) rows of the ablation and the paper findings they test
ABLATION_RUNS = [('flight', r) for r in ('output', 'feature', 'output+svd', 'feature+svd',
                                         'sparse-gt')] + [
    ('vit-l-enc', 'feature+svd'), ('vit-l-dec', 'feature+svd'), ('cnn', 'feature+svd')]
FINDINGS = [
    ('feature-level > output-level', ('flight', 'feature'), ('flight', 'output')),
    ('encoder capacity > decoder size', ('vit-l-enc', 'feature+svd'),
     ('vit-l-dec', 'feature+svd')),
    ('ViT encoder > CNN encoder', ('flight', 'feature+svd'), ('cnn', 'feature+svd')),
    ('SVD init helps', ('flight', 'feature+svd'), ('flight', 'feature')),
    ('distilled > sparse ground truth', ('flight', 'feature+svd'), ('flight', 'sparse-gt')),
]


def _ablate(args, teacher, train_dir, eval_dir, cache) -> int:
    rows = [{'student': 'teacher', 'recipe': 'dense-gt', 'params': count_params(teacher),
             'flops_per_pair': count_flops(teacher),
             **eval_backend(TorchBackend(teacher), eval_dir, args.stride)},
            {'student': 'sgbm', 'recipe': '-', **eval_backend('sgbm', eval_dir, args.stride)}]
    for student, recipe in ABLATION_RUNS:
        model, meta = distill_one(args, student, recipe, teacher, train_dir, cache)
        onnx_path = export_onnx(model, args.work / 'onnx' / f'{student}__{recipe}.onnx')
        backend = OnnxStudentBackend(onnx_path, file_sha256(onnx_path), model.spec.input_size)
        rows.append({'student': student, 'recipe': recipe, 'params': count_params(model),
                     'flops_per_pair': count_flops(model),
                     'onnx_ms': round(onnx_latency_ms(backend), 1),
                     **eval_backend(backend, eval_dir, args.stride)})
        log.info('%s', rows[-1])
    by = {(r['student'], r['recipe']): r for r in rows}
    findings = []
    for text, a, b in FINDINGS:
        ra, rb = by[a], by[b]
        findings.append({'finding': text, 'a': '/'.join(a), 'b': '/'.join(b),
                         'abs_rel_a': ra['abs_rel'], 'abs_rel_b': rb['abs_rel'],
                         'hazard_f1_a': ra['hazard_f1'], 'hazard_f1_b': rb['hazard_f1'],
                         'holds_abs_rel': bool(ra['abs_rel'] < rb['abs_rel']),
                         'holds_hazard_f1': bool((ra['hazard_f1'] or 0)
                                                 > (rb['hazard_f1'] or 0))})
    report = {'command': (f'l3d distill ablate --steps {args.steps} --teacher-steps '
                          f'{args.teacher_steps} --batch {args.batch} --pairs {args.pairs} '
                          f'--eval-pairs {args.eval_pairs}'),
              'train': str(train_dir), 'eval': str(eval_dir), 'train_seed': TRAIN_SEED,
              'eval_seed': EVAL_SEED, 'steps': args.steps, 'batch': args.batch,
              'teacher': teacher_record(teacher),
              'machine': platform.machine(), 'rows': rows, 'findings': findings}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'ablation.json').write_text(json.dumps(report, indent=2) + '\n')
    (args.out / 'ablation.md').write_text(_markdown(report))
    print(_markdown(report))
    return 0


def _fmt(v, spec='.4f'):
    return '-' if v is None else (format(v, spec) if isinstance(v, float) else str(v))


def _markdown(rep: dict) -> str:
    cols = ('student', 'recipe', 'params', 'flops_per_pair', 'onnx_ms', 'abs_rel',
            'delta_1_25', 'completeness', 'hazard_f1')
    lines = ['# Distillation ablation (generated, do not edit)', '',
             f'Command: `{rep["command"]}`. Train seed {rep["train_seed"]}, held-out eval '
             f'seed {rep["eval_seed"]} (terrains never trained on); {rep["steps"]} steps of '
             f'batch {rep["batch"]} per student on a shared 2-core CPU: a tiny budget, so '
             'differences of a few percent are within run-to-run noise. Teacher: '
             f'{rep["teacher"]["kind"]}, {rep["teacher"]["trained_on"]} '
             f'({rep["teacher"]["note"]}). onnx_ms: ONNX Runtime, 2 threads, at the input size.',
             '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rep['rows']:
        cells = [_fmt(r.get(c), ',') if c in ('params', 'flops_per_pair') else _fmt(r.get(c))
                 for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '## Findings of the paper, tested here', '',
              '| finding | a | b | AbsRel a / b | hazard F1 a / b | holds (AbsRel) | holds (F1) |',
              '|---|---|---|---|---|---|---|']
    for f in rep['findings']:
        lines.append(f'| {f["finding"]} | {f["a"]} | {f["b"]} | {_fmt(f["abs_rel_a"])} / '
                     f'{_fmt(f["abs_rel_b"])} | {_fmt(f["hazard_f1_a"])} / '
                     f'{_fmt(f["hazard_f1_b"])} | {"yes" if f["holds_abs_rel"] else "NO"} | '
                     f'{"yes" if f["holds_hazard_f1"] else "NO"} |')
    return '\n'.join(lines) + '\n'
