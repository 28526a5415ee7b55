"""`l3d distill run|flight|ablate`: distil students from a MASt3R teacher, ship the flight student,
and the ablation table.

Everything is reproducible from scratch and reused from --work when present:
  train      `l3d sim dataset` seed 1000 (--pairs, at --train-size px, camera heights
             --train-altitude, by default the guidance's whole scan range 150 m down to the
             final 20 m scan): teacher and students
  val        seed 4000 at the rig's 512x512, 30-150 m: picks the shipped flight candidate
  eval       seed 5000 at 512x512, 30-150 m: depth metrics (AbsRel, delta, Chamfer, ...)
  hazard     seed 5001 at 512x512 rendered at the final-scan altitudes 20-26 m (a parameter
             file override written to --work): hazard F1. Above ~28 m a single frame cannot
             judge 0.3 m rocks with this rig, so the node marks those cells unknown/hazard and
             hazard F1 does not separate methods on the 30-150 m set.
  teacher    --teacher PATH (a MASt3R checkpoint for load_mast3r), or WORK/teacher trained by
             `l3d train teacher --data TRAIN --steps --teacher-steps` when missing.
  runs       WORK/runs/<student>__<recipe>__<steps>x<batch>__lr<lr>__s<seed>.safetensors: a
             finished run with the same name is reused, not retrained.
Evaluation seeds are never trained on.
"""
import argparse
from dataclasses import replace
import json
import logging
from pathlib import Path
import platform
import sys
import time
import timeit

import numpy as np
import torch
import yaml

from l3d_ros.backends import DepthResult, finalize, to_gray01
from l3d_ros.backends.onnx_student import disparity_to_result, file_sha256, OnnxStudentBackend
from l3d_ros.backends.onnx_student import read_manifest, select_entry
from l3d_ros.backends.onnx_student import resize_to
from l3d_ros.config import default_config_path, load_node_config
from l3d_ros.dataset import list_pairs, read_pair
from l3d_ros.evaluate import DepthCounts, evaluate
from l3d_ros.geometry import backproject, depth_to_disparity, stereo_visible
from l3d_ros.infer import DepthSource
from l3d_train.data import cache_mast3r, PairDataset
from l3d_train.distill import load_checkpoint, RECIPES, train
from l3d_train.export import export_onnx, manifest_entry, training_input_mean, update_manifest
from l3d_train.mast3r import load_mast3r
from l3d_train.mast3r.pair import teacher_depth
from l3d_train.students import count_flops, count_params, get_spec

log = logging.getLogger(__name__)
TRAIN_SEED, VAL_SEED, EVAL_SEED, HAZARD_SEED = 1000, 4000, 5000, 5001
FINAL_SCAN_ALTITUDE_M = (20.0, 26.0)   # the guidance final scans are at 30, 24, 20 m
TRAIN_ALTITUDE_M = (20.0, 150.0)       # the whole scan range: 150 m (HDA gate) to 20 m
CHAMFER_POINTS = 4000          # points drawn from each cloud per pair


class TorchBackend:
    """A torch student behind the runtime's pre/post-processing (unexported models)."""

    name = 'torch'

    def __init__(self, model):
        self.model = model.eval()

    @torch.no_grad()
    def compute(self, left01, right01, calib):
        size = self.model.spec.input_size
        x = [torch.from_numpy(resize_to(img, size))[None, None] for img in (left01, right01)]
        res = self.model(*x)
        return disparity_to_result(res['disp'][0, 0].numpy(), res['conf'][0, 0].numpy(), calib)


class Mast3rBackend:
    """The MASt3R teacher as a depth backend: metric depth from its pointmaps and the known
    baseline (l3d_train.mast3r.pair.teacher_depth), at the teacher's training size."""

    name = 'teacher'

    def __init__(self, model):
        self.model = model.eval()

    def compute(self, left01, right01, calib) -> DepthResult:
        try:
            depth, conf = teacher_depth(self.model, left01, right01, calib,
                                        max(self.model.cfg.img_size))
        except ValueError:                  # no baseline in the pointmaps: no depth at all
            depth, conf = np.full(calib.shape, np.nan, np.float32), np.zeros(calib.shape)
        ok = np.isfinite(depth)
        return DepthResult(depth, np.where(ok, conf, 0.0).astype(np.float32),
                           depth_to_disparity(depth, calib.fx, calib.baseline_m))


def _source(backend) -> DepthSource:
    """The `l3d eval` depth source (node validity rules) around an in-memory backend.
    'sgbm': the node's SGBM (sub-pixel refined); 'sgbm_opencv': OpenCV's SGBM alone, its own
    sub-pixel fraction (`subpixel_window_px: 0`), the baseline stereo users know."""
    if backend == 'sgbm_opencv':
        return DepthSource('sgbm', replace(load_node_config(), subpixel_window_px=0.0))
    if backend in ('sgbm', None):       # None: the oracle (the pair's ground-truth depth)
        return DepthSource(backend or 'oracle', load_node_config())
    src = DepthSource('oracle', load_node_config())
    src.name, src.backend = getattr(backend, 'name', 'student'), backend
    return src


def chamfer_m(pred_m: np.ndarray, gt_m: np.ndarray, calib, rng: np.random.Generator,
              n: int = CHAMFER_POINTS) -> float:
    """Symmetric Chamfer distance [m] between the back-projected clouds of two (H, W) depth maps.

    0.5 (mean_p min_g |p - g| + mean_g min_p |g - p|) over n points drawn from each cloud
    (finite pixels); NaN when either cloud is empty.
    """
    from scipy.spatial import cKDTree
    clouds = []
    for depth in (pred_m, gt_m):
        pts = backproject(depth, calib).reshape(-1, 3)
        pts = pts[np.isfinite(pts).all(axis=1)]
        if len(pts) == 0:
            return float('nan')
        clouds.append(pts[rng.choice(len(pts), min(n, len(pts)), replace=False)])
    p, g = clouds
    return 0.5 * float(cKDTree(g).query(p)[0].mean() + cKDTree(p).query(g)[0].mean())


def depth_metrics(backend, dataset: Path) -> dict:
    """Depth metrics of a backend on `dataset`, twice: under the node's validity rules (abs_rel,
    rmse_m, delta_1_25, completeness as `l3d eval`, chamfer_m) and over every pixel the backend
    gives a depth in range, whatever its confidence (*_all: compares the geometry of students
    whose confidence would blank most pixels at the node's threshold). Chamfer [m] is the mean
    over pairs; latency_ms_median the backend's depth time per pair."""
    source, cfg = _source(backend), load_node_config()
    counts, counts_all = DepthCounts(), DepthCounts()
    chamfers, chamfers_all, latency_ms = [], [], []
    rng = np.random.default_rng(0)
    pairs = list_pairs(dataset)
    for folder in pairs:
        pair = read_pair(folder)
        left01, right01 = to_gray01(pair.left), to_gray01(pair.right)
        raw, seconds = source.raw(pair, left01, right01)
        latency_ms.append(1e3 * seconds)
        visible = stereo_visible(pair.depth_m, pair.calib)
        for conf_min, c, ch in ((cfg.confidence_min, counts, chamfers),
                                (0.0, counts_all, chamfers_all)):
            result = finalize(raw.depth_m, raw.confidence, pair.calib, cfg.depth_min_m,
                              cfg.depth_max_m, conf_min)
            c.add(result.depth_m, pair.depth_m, visible)
            ch.append(chamfer_m(result.depth_m, pair.depth_m, pair.calib, rng))
    out = {'n_pairs': len(pairs), **counts.metrics()}
    out.update({f'{k}_all': v for k, v in counts_all.metrics().items()})
    for key, values in (('chamfer_m', chamfers), ('chamfer_m_all', chamfers_all)):
        finite = [c for c in values if np.isfinite(c)]
        out[key] = float(np.mean(finite)) if finite else float('nan')
    out['latency_ms_median'] = float(np.median(latency_ms))
    out['fallback_pairs'] = len(source.fallbacks)
    return out


def hazard_metrics(backend, dataset: Path, stride: int | None) -> dict:
    """Hazard precision / recall / F1 (`l3d eval`) of a backend on `dataset`."""
    m = evaluate(dataset, _source(backend), stride)
    return {'n_pairs': m['n_pairs'], **{k: m[k] for k in (
        'hazard_precision', 'hazard_recall', 'hazard_f1')}}


def all_metrics(backend, data: dict, stride: int | None) -> dict:
    """Depth metrics on the 30-150 m set, hazard metrics on the final-scan set."""
    out = depth_metrics(backend, data['eval'])
    hz = hazard_metrics(backend, data['hazard'], stride)
    return {**out, **{k: v for k, v in hz.items() if k != 'n_pairs'},
            'hazard_n_pairs': hz['n_pairs']}


def onnx_latency_ms(backend: OnnxStudentBackend) -> float:
    """Best-of-5 mean of 10 ONNX runs at the model's input size on this CPU."""
    h, w = backend.input_size
    rng = np.random.default_rng(0)
    a, b = rng.random((h, w), np.float32), rng.random((h, w), np.float32)
    backend.infer(a, b)
    return 1e3 * min(timeit.repeat(lambda: backend.infer(a, b), number=10, repeat=5)) / 10


def _render(folder: Path, pairs: int, seed: int, extra: list[str]) -> Path:
    from l3d_ros.cli import main as l3d
    if not folder.is_dir():
        argv = ['sim', 'dataset', str(folder), '--pairs', str(pairs), '--seed', str(seed)]
        if l3d(argv + extra):
            raise RuntimeError(f'l3d {" ".join(argv + extra)} failed')
    return folder


def altitude_config(work: Path, name: str, altitude_m: tuple[float, float]) -> Path:
    """WORK/NAME.yaml: the package parameter file with the dataset camera heights set."""
    params = yaml.safe_load(default_config_path().read_text())
    dataset = params['l3d_sim']['ros__parameters'].setdefault('dataset', {})
    dataset['altitude_min_m'], dataset['altitude_max_m'] = map(float, altitude_m)
    path = work / f'{name}.yaml'
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def final_scan_config(work: Path) -> Path:
    """The package parameter file with the dataset altitudes set to the final scan's."""
    return altitude_config(work, 'final_scan', FINAL_SCAN_ALTITUDE_M)


def ensure_data(args, held_out: bool = True) -> dict[str, Path]:
    """Train (and with held_out val / eval / hazard) datasets: given, or rendered into --work
    with fixed seeds."""
    w, size = args.work, args.train_size
    lo, hi = args.train_altitude
    train_dir = args.train or _render(
        w / f'train_s{TRAIN_SEED}_n{args.pairs}_{size}px_{lo:.0f}-{hi:.0f}m', args.pairs,
        TRAIN_SEED, ['--width', str(size), '--height', str(size), '--config',
                     str(altitude_config(w, 'train_altitude', args.train_altitude))])
    if not held_out:
        return {'train': train_dir}
    return {'train': train_dir,
            'val': args.val or _render(w / f'val_s{VAL_SEED}_n{args.val_pairs}',
                                       args.val_pairs, VAL_SEED, []),
            **test_sets(args)}


def test_sets(args) -> dict[str, Path]:
    """The held-out depth (30-150 m) and hazard (final scan) sets: given, or rendered."""
    w = args.work
    lo, hi = FINAL_SCAN_ALTITUDE_M
    return {
        'eval': args.eval or _render(w / f'eval_depth_s{EVAL_SEED}_n{args.eval_pairs}',
                                     args.eval_pairs, EVAL_SEED, []),
        'hazard': args.hazard_eval or _render(
            w / f'eval_hazard_s{HAZARD_SEED}_n{args.hazard_pairs}_{lo:.0f}-{hi:.0f}m',
            args.hazard_pairs, HAZARD_SEED, ['--config', str(final_scan_config(w))])}


def ensure_teacher(args, train_dir: Path) -> tuple[torch.nn.Module, Path]:
    """The MASt3R teacher: --teacher, or WORK/teacher trained (or resumed) by `l3d train`."""
    if args.teacher is not None:
        return load_mast3r(args.teacher), args.teacher
    run = args.work / 'teacher'
    path = run / 'teacher.safetensors'
    if not path.is_file():
        from l3d_ros.cli import main as l3d
        argv = ['train', 'teacher', '--data', str(train_dir), '--out', str(run),
                '--steps', str(args.teacher_steps), '--save-every', '50', '--quiet']
        if (run / 'checkpoints' / 'latest').is_file():
            argv.append('--resume')
        log.info('training the teacher: l3d %s', ' '.join(argv))
        if l3d(argv):
            raise RuntimeError(f'l3d {" ".join(argv)} failed')
    return load_mast3r(path), path


def teacher_record(model, path: Path) -> dict:
    """What the manifest says about the teacher: its teacher.json, file hash and size."""
    sidecar = Path(path).with_suffix('.json')
    made = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
    keep = ('command', 'n_pairs', 'steps', 'final_loss', 'wall_s', 'device', 'git_commit',
            'loss', 'data', 'init')
    return {'kind': 'MASt3R (l3d_train.mast3r), reduced widths, trained by `l3d train teacher`',
            'file': str(path), 'sha256': file_sha256(path), 'model': made.get('model'),
            'params': count_params(model), **{k: made[k] for k in keep if k in made}}


def run_name(student: str, recipe: str, steps: int, batch: int, lr: float, seed: int) -> str:
    return f'{student}__{recipe}__{steps}x{batch}__lr{lr:.0e}__s{seed}'   # no '.': a suffix


def distill_one(args, student: str, recipe: str, teacher, data: dict, cache: Path,
                steps: int, seed: int = 0):
    """Train (or reuse from WORK/runs) one student with one recipe; (model, meta)."""
    spec = get_spec(student)
    rec = replace(RECIPES[recipe], steps=steps, batch=args.batch, lr=args.lr, seed=seed)
    out = args.work / 'runs' / run_name(student, recipe, steps, args.batch, args.lr, seed)
    if out.with_suffix('.safetensors').is_file():
        log.info('reusing %s', out)
        return load_checkpoint(out.with_suffix('.safetensors'))
    dataset = PairDataset(list_pairs(data['train']), spec.input_size,
                          teacher_cache=cache if rec.target == 'teacher' else None,
                          sparse_fraction=rec.sparse_fraction, seed=TRAIN_SEED)
    return train(spec, rec, dataset, out, teacher=teacher, progress=not args.quiet)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest='action', required=True)
    for name, text in (('flight', 'train, pick, export and evaluate the flight student'),
                       ('ablate', 'students x recipes table (docs/ablation.md + .json)'),
                       ('run', 'one student with one recipe')):
        p = sub.add_parser(name, help=text)
        p.add_argument('--out', type=Path, default=Path('docs' if name == 'ablate' else 'models'))
        p.add_argument('--work', type=Path, default=Path('out/distill'),
                       help='datasets, teacher, caches and runs (reused when present)')
        p.add_argument('--teacher', type=Path, default=None,
                       help='MASt3R checkpoint (.safetensors + .json sidecar, or .pth); default '
                       'WORK/teacher/teacher.safetensors, trained when missing')
        p.add_argument('--teacher-steps', type=int, default=300)
        p.add_argument('--train', type=Path, default=None, help='training pair folders')
        p.add_argument('--val', type=Path, default=None, help='held-out selection set')
        _test_set_arguments(p)
        p.add_argument('--pairs', type=int, default=160, help='training pairs to render')
        p.add_argument('--train-size', type=int, default=256, help='training render size [px]')
        p.add_argument('--train-altitude', type=float, nargs=2, default=TRAIN_ALTITUDE_M,
                       metavar=('MIN', 'MAX'),
                       help='camera heights of the training pairs [m] (default: the '
                       'guidance scan range)')
        p.add_argument('--val-pairs', type=int, default=6)
        p.add_argument('--steps', type=int, default=600 if name == 'flight' else 100)
        p.add_argument('--batch', type=int, default=4)
        p.add_argument('--lr', type=float, default=2e-3)
        p.add_argument('--threads', type=int, default=2, help='torch CPU threads')
        p.add_argument('--quiet', action='store_true', help='no progress bars')
        if name == 'run':
            p.add_argument('--student', default='flight')
            p.add_argument('--recipe', default='feature+svd', choices=sorted(RECIPES))
        if name == 'flight':
            p.add_argument('--recipes', default='feature+svd,dense-gt',
                           help='candidates; the best AbsRel on the val set is shipped')
    p = sub.add_parser('evaluate', help="re-measure the shipped student's figures in the "
                       'manifest as the node runs it now (no training)')
    p.add_argument('--out', type=Path, default=Path('models'), help='models folder')
    p.add_argument('--work', type=Path, default=Path('out/distill'),
                   help='held-out sets (rendered when missing)')
    _test_set_arguments(p)


def _test_set_arguments(p: argparse.ArgumentParser) -> None:
    """The held-out sets of `test_sets` and the hazard stride they are scored at."""
    p.add_argument('--eval', type=Path, default=None, help='held-out depth set')
    p.add_argument('--hazard-eval', type=Path, default=None, help='held-out hazard set')
    p.add_argument('--eval-pairs', type=int, default=16)
    p.add_argument('--hazard-pairs', type=int, default=12)
    p.add_argument('--stride', type=int, default=None, help='hazard stride (default auto)')


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    if args.action == 'evaluate':
        return _evaluate(args)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    data = ensure_data(args, held_out=args.action != 'run')
    if args.action == 'run' and RECIPES[args.recipe].target != 'teacher':
        _, meta = distill_one(args, args.student, args.recipe, None, data, None, args.steps)
        print(json.dumps(meta['final_loss']))                 # ground truth: no teacher
        return 0
    teacher, teacher_path = ensure_teacher(args, data['train'])
    cache = cache_mast3r(teacher, list_pairs(data['train']), args.work / 'teacher_cache',
                         get_spec('flight').input_size)
    if args.action == 'run':
        _, meta = distill_one(args, args.student, args.recipe, teacher, data, cache, args.steps)
        print(json.dumps(meta['final_loss']))
        return 0
    if args.action == 'flight':
        return _flight(args, teacher, teacher_path, data, cache)
    return _ablate(args, teacher, teacher_path, data, cache)


def _command(args) -> str:
    return 'l3d distill ' + ' '.join(sys.argv[2:]) if len(sys.argv) > 2 else f'l3d distill ' \
        f'{args.action}'


def node_backend(onnx_path: Path, model, data: dict) -> OnnxStudentBackend:
    """The exported student as the node runs it: exposure matching to the training mean,
    sub-pixel refinement, range guard and frame verification (a refused pair is SGBM's,
    counted in fallback_pairs)."""
    node = load_node_config()
    return OnnxStudentBackend(onnx_path, file_sha256(onnx_path), model.spec.input_size,
                              input_mean=training_input_mean(data['train']),
                              subpixel_window_px=node.subpixel_window_px,
                              max_disp_px=model.spec.max_disp_px,
                              verify_unmatched_max=node.student.verify_unmatched_max)


def _flight(args, teacher, teacher_path, data, cache) -> int:
    candidates = {}
    for recipe in args.recipes.split(','):
        model, meta = distill_one(args, 'flight', recipe, teacher, data, cache, args.steps)
        candidates[recipe] = (model, meta, depth_metrics(TorchBackend(model), data['val']))
        log.info('%s: val AbsRel (all pixels) %.4f', recipe, candidates[recipe][2]['abs_rel_all'])
    best = min(candidates, key=lambda r: candidates[r][2]['abs_rel_all'])
    model, meta, _ = candidates[best]
    onnx_path = export_onnx(model, args.out / 'flight.onnx')
    backend = node_backend(onnx_path, model, data)
    t0 = time.perf_counter()
    figures = {
        'depth_set': f'{data["eval"]} (seed {EVAL_SEED}, 30-150 m, 512x512)',
        'hazard_set': f'{data["hazard"]} (seed {HAZARD_SEED}, final scan '
                      f'{FINAL_SCAN_ALTITUDE_M[0]:.0f}-{FINAL_SCAN_ALTITUDE_M[1]:.0f} m)',
        'student': all_metrics(backend, data, args.stride),
        'teacher': all_metrics(Mast3rBackend(teacher), data, args.stride),
        'sgbm': all_metrics('sgbm', data, args.stride),
        'sgbm_opencv': all_metrics('sgbm_opencv', data, args.stride),
        'oracle_hazard': hazard_metrics(None, data['hazard'], args.stride),
        'candidates_eval': {r: depth_metrics(TorchBackend(m), data['eval'])
                            for r, (m, _, _) in candidates.items()},
        'onnx_latency_ms_2threads': round(onnx_latency_ms(backend), 1),
        'machine': f'{platform.machine()} {platform.processor() or ""}'.strip()}
    log.info('evaluation took %.0f s', time.perf_counter() - t0)
    teacher_wall_s = float(teacher_record(teacher, teacher_path).get('wall_s', float('nan')))
    selection = {'rule': 'lowest AbsRel over all pixels (no confidence cut) on the validation set',
                 'val_set':
                 f'{data["val"]} (seed {VAL_SEED})',
                 'val_abs_rel_all': {r: c[2]['abs_rel_all'] for r, c in candidates.items()},
                 'chosen': best}
    record = {'train': str(data['train']), 'train_seed': TRAIN_SEED,
              'train_altitude_m': list(args.train_altitude),
              'train_pairs': len(list_pairs(data['train'])), 'eval_seed': EVAL_SEED,
              'hazard_seed': HAZARD_SEED, 'val_seed': VAL_SEED, 'steps': args.steps,
              'batch': args.batch, 'lr': args.lr, 'command': _command(args),
              'make': '`make model` runs `l3d distill flight --out models` with these defaults '
                      '(work folder out/distill); from scratch it renders the datasets (~3 min), '
                      f'trains the teacher (`l3d train teacher --steps {args.teacher_steps}`: '
                      f'{teacher_wall_s / 60:.0f} min for this one on a shared 2-core CPU), '
                      'caches it (~3 min), distils each candidate (~20-25 min each) and '
                      'evaluates (~5 min)'}
    target = 'the MASt3R teacher' if meta['recipe']['target'] == 'teacher' else (
        'simulator ground truth, NOT the teacher (it beat the distilled candidates on the '
        'validation set)')
    summary = (f'flight student: recipe {best} ({args.steps} steps of batch {args.batch} on '
               f'{record["train_pairs"]} pairs, {meta["train_wall_s"]:.0f} s), trained on '
               f'{target}.{SUMMARY_FIGURES}{figures_sentence(figures)}')
    entry = manifest_entry(model, onnx_path, 'flight', {
        'summary': summary, 'recipe': meta['recipe'], 'svd_init': meta['svd_init'],
        'trained_on': target,
        'selection': selection, 'teacher': teacher_record(teacher, teacher_path),
        'eval': figures, 'data': record, 'train_wall_s': meta['train_wall_s'],
        'input_mean': backend.input_mean})
    path = update_manifest(args.out, entry)
    print(json.dumps(figures, indent=2))
    print(f'wrote {onnx_path} and {path}')
    return 0


SUMMARY_FIGURES = ' Held-out '        # where a manifest summary's figures start


def figures_sentence(figures: dict) -> str:
    """The manifest summary's figures (after SUMMARY_FIGURES), from an entry's `eval`."""
    st, te, sg = figures['student'], figures['teacher'], figures['sgbm']
    lo, hi = FINAL_SCAN_ALTITUDE_M
    plain = figures.get('sgbm_opencv')
    opencv = '' if plain is None else f', OpenCV SGBM alone {plain["abs_rel"]:.4f}'
    return (f'AbsRel {st["abs_rel"]:.4f} (teacher {te["abs_rel"]:.4f}, SGBM '
            f'{sg["abs_rel"]:.4f}{opencv}), completeness {st["completeness"]:.4f} (SGBM '
            f'{sg["completeness"]:.4f}), Chamfer {st["chamfer_m"]:.2f} m (SGBM '
            f'{sg["chamfer_m"]:.2f} m); hazard F1 at {lo:.0f}-{hi:.0f} m '
            f'{st["hazard_f1"]:.4f} (teacher {te["hazard_f1"]:.4f}, SGBM '
            f'{sg["hazard_f1"]:.4f}).')


def _evaluate(args) -> int:
    """Re-measure the default model's runtime figures (student and SGBM as the node runs
    them now, the oracle's hazard, ONNX latency) on the held-out sets and rewrite them in its
    manifest entry; the file and sha256 are untouched, the teacher's and the training
    candidates' figures stay those of the training run (torch, unaffected by the runtime)."""
    manifest_path = args.out / 'manifest.json'
    entry = select_entry(read_manifest(manifest_path), manifest_path)
    node = load_node_config()
    backend = OnnxStudentBackend.from_manifest(
        args.out, replace(node.student, model=str(manifest_path.resolve())),
        subpixel_window_px=node.subpixel_window_px)
    data = test_sets(args)
    figures = dict(entry['eval'])
    figures.update({
        'student': all_metrics(backend, data, args.stride),
        'sgbm': all_metrics('sgbm', data, args.stride),
        'sgbm_opencv': all_metrics('sgbm_opencv', data, args.stride),
        'oracle_hazard': hazard_metrics(None, data['hazard'], args.stride),
        'onnx_latency_ms_2threads': round(onnx_latency_ms(backend), 1),
        'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(),
        'measured_by': (f'l3d distill evaluate --out {args.out} --eval {data["eval"]} '
                        f'--hazard-eval {data["hazard"]} (student, sgbm, sgbm_opencv, '
                        'oracle_hazard, onnx latency; teacher and candidates_eval: the '
                        'training run)')})
    head = entry['summary'].split(SUMMARY_FIGURES)[0]
    entry = {**entry, 'eval': figures,
             'summary': f'{head}{SUMMARY_FIGURES}{figures_sentence(figures)}'}
    path = update_manifest(args.out, entry, default=False)
    print(json.dumps({k: figures[k] for k in ('student', 'sgbm', 'sgbm_opencv',
                                              'oracle_hazard')}, indent=2))
    print(f'updated {path} ({entry["name"]})')
    return 0


# (student, recipe) rows of the ablation and the paper findings they test
ABLATION_RUNS = [('flight', r) for r in ('output', 'feature', 'output+svd', 'feature+svd',
                                         'sparse-gt', 'dense-gt')] + [
    ('vit-l-enc', 'feature+svd'), ('vit-l-dec', 'feature+svd'), ('cnn', 'feature+svd')]
FINDINGS = [
    ('feature-level > output-level', ('flight', 'feature'), ('flight', 'output')),
    ('feature-level > output-level (with SVD init)', ('flight', 'feature+svd'),
     ('flight', 'output+svd')),
    ('encoder capacity > decoder size', ('vit-l-enc', 'feature+svd'),
     ('vit-l-dec', 'feature+svd')),
    ('ViT encoder > CNN encoder', ('flight', 'feature+svd'), ('cnn', 'feature+svd')),
    ('SVD init helps', ('flight', 'feature+svd'), ('flight', 'feature')),
    ('SVD init helps (output-level)', ('flight', 'output+svd'), ('flight', 'output')),
    ('distilled > sparse ground truth', ('flight', 'feature+svd'), ('flight', 'sparse-gt')),
    ('(not in the paper) distilled > dense ground truth', ('flight', 'feature+svd'),
     ('flight', 'dense-gt')),
]


def _ablate(args, teacher, teacher_path, data, cache) -> int:
    rows = [{'student': 'teacher (MASt3R)', 'recipe': 'l3d train teacher',
             'params': count_params(teacher), **all_metrics(Mast3rBackend(teacher), data,
                                                            args.stride)},
            {'student': 'sgbm', 'recipe': '-', **all_metrics('sgbm', data, args.stride)},
            {'student': 'oracle (ground-truth depth)', 'recipe': '-',
             **hazard_metrics(None, data['hazard'], args.stride)}]
    for student, recipe in ABLATION_RUNS:
        model, meta = distill_one(args, student, recipe, teacher, data, cache, args.steps)
        onnx_path = export_onnx(model, args.work / 'onnx' / f'{student}__{recipe}.onnx')
        # the student alone: the node's frame verification would hand most frames of these
        # undertrained students to SGBM, and the rows would compare SGBM's geometry
        backend = OnnxStudentBackend(onnx_path, file_sha256(onnx_path), model.spec.input_size)
        rows.append({'student': student, 'recipe': recipe, 'params': count_params(model),
                     'flops_per_pair': count_flops(model),
                     'onnx_ms': round(onnx_latency_ms(backend), 1),
                     'train_wall_s': meta['train_wall_s'],
                     **all_metrics(backend, data, args.stride)})
        log.info('%s', rows[-1])
    by = {(r['student'], r['recipe']): r for r in rows}
    findings = []
    for text, a, b in FINDINGS:
        ra, rb = by[a], by[b]
        findings.append({
            'finding': text, 'a': '/'.join(a), 'b': '/'.join(b),
            **{f'{k}_{s}': r[k] for k in ('abs_rel_all', 'chamfer_m_all', 'hazard_f1')
               for s, r in (('a', ra), ('b', rb))},
            'holds_abs_rel': bool(ra['abs_rel_all'] < rb['abs_rel_all']),
            'holds_chamfer': bool(ra['chamfer_m_all'] < rb['chamfer_m_all']),
            'holds_hazard_f1': bool((ra['hazard_f1'] or 0) > (rb['hazard_f1'] or 0))})
    report = {'command': _command(args), 'train': str(data['train']),
              'eval': str(data['eval']), 'hazard_eval': str(data['hazard']),
              'train_seed': TRAIN_SEED, 'eval_seed': EVAL_SEED, 'hazard_seed': HAZARD_SEED,
              'final_scan_altitude_m': list(FINAL_SCAN_ALTITUDE_M), 'steps': args.steps,
              'batch': args.batch, 'lr': args.lr, 'threads': args.threads,
              'teacher': teacher_record(teacher, teacher_path),
              'machine': f'{platform.machine()} {platform.processor() or ""}'.strip(),
              'rows': rows, 'findings': findings}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / 'ablation.json').write_text(json.dumps(report, indent=2) + '\n')
    (args.out / 'ablation.md').write_text(markdown(report))
    print(markdown(report))
    return 0


def _fmt(v, spec='.4f'):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return '-'
    if isinstance(v, int) and not isinstance(v, bool):
        return f'{v:,}'
    return format(v, spec) if isinstance(v, float) else str(v)


def markdown(rep: dict) -> str:
    """The ablation report as a Markdown page (table + the findings)."""
    cols = ('student', 'recipe', 'params', 'flops_per_pair', 'onnx_ms', 'abs_rel_all',
            'delta_1_25_all', 'chamfer_m_all', 'abs_rel', 'completeness', 'hazard_f1')
    t = rep['teacher']
    lo, hi = rep['final_scan_altitude_m']
    lines = [
        '# Distillation ablation (generated by the command below, do not edit)', '',
        f'Command: `{rep["command"]}`.', '',
        f'Training pairs: seed {rep["train_seed"]} ({rep["train"]}); held-out sets '
        f'{rep["eval"]} and {rep["hazard_eval"]}. Depth metrics '
        f'(AbsRel, delta<1.25, Chamfer [m], completeness) on seed {rep["eval_seed"]}, '
        f'30-150 m, 512x512; hazard F1 on seed {rep["hazard_seed"]} rendered at the final-scan '
        f'altitudes {lo:.0f}-{hi:.0f} m (above ~28 m one frame cannot judge 0.3 m rocks with '
        'this rig, so every backend gets the same F1 there). Never trained on.', '',
        f'Budget: {rep["steps"]} steps of batch {rep["batch"]} (lr {rep["lr"]:g}) per student '
        f'on a shared 2-core CPU ({rep["threads"]} torch threads): tiny, so differences of a '
        'few percent are within run-to-run noise. Teacher: '
        f'{t["kind"]}, {t["params"]:,} parameters, {t.get("steps", "?")} steps '
        f'(`{t.get("command", "?")}`), sha256 {t["sha256"][:12]}. onnx_ms: ONNX Runtime, '
        '2 threads, at the 256x256 input; Chamfer: symmetric mean nearest-neighbour distance '
        f'between {CHAMFER_POINTS} predicted and {CHAMFER_POINTS} ground-truth points per pair. '
        '*_all: every pixel with a depth in range, whatever its confidence (the geometry); '
        'abs_rel and completeness: after the node\'s confidence cut (0.3) and correlation-peak '
        'check, the student alone (no sub-pixel refinement, exposure matching or frame '
        'verification: the node would hand most frames of these undertrained students to '
        'SGBM; the flight student\'s manifest figures are taken as the node runs it). The '
        'distilled students learn confidence = agreement with the teacher, and this teacher '
        'is poor, so they blank almost every pixel at the node\'s threshold (completeness ~0); '
        'the findings therefore compare *_all.',
        '', '| ' + ' | '.join(cols) + ' |', '|' + '---|' * len(cols)]
    for r in rep['rows']:
        spec = {'onnx_ms': '.1f', 'chamfer_m_all': '.2f'}
        cells = [_fmt(r.get(c), spec.get(c, '.4f')) for c in cols]
        lines.append('| ' + ' | '.join(cells) + ' |')
    lines += ['', '## Findings of the paper, tested here', '',
              '| finding | a | b | AbsRel (all) a / b | Chamfer (all) a / b | hazard F1 a / b | '
              'holds '
              '(AbsRel) | holds (Chamfer) | holds (F1) |', '|---|---|---|---|---|---|---|---|---|']

    def yes(v):
        return 'yes' if v else 'NO'
    for f in rep['findings']:
        lines.append(f'| {f["finding"]} | {f["a"]} | {f["b"]} | {_fmt(f["abs_rel_all_a"])} / '
                     f'{_fmt(f["abs_rel_all_b"])} | {_fmt(f["chamfer_m_all_a"], ".2f")} / '
                     f'{_fmt(f["chamfer_m_all_b"], ".2f")} | {_fmt(f["hazard_f1_a"])} / '
                     f'{_fmt(f["hazard_f1_b"])} | {yes(f["holds_abs_rel"])} | '
                     f'{yes(f["holds_chamfer"])} | {yes(f["holds_hazard_f1"])} |')
    return '\n'.join(lines) + '\n'
