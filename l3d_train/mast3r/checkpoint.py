"""Safe loading of official MASt3R checkpoints (.pth) and of our .safetensors exports.

Nothing here executes code from a file: a .pth is unpickled by torch's weights-only unpickler
with a short allow-list (tensors, OrderedDict, argparse.Namespace, numpy scalars and dtypes), and
the constructor string `args.model` is parsed with `ast`, accepting only literal keywords.
"""
import argparse
import ast
from dataclasses import fields
import json
import math
from pathlib import Path
import pickle

import numpy as np
import torch

from l3d_train.mast3r.model import MASt3R, MASt3RConfig

MODEL_CLASSES = ('AsymmetricMASt3R',)
IGNORED_KWARGS = {'mask_ratio', 'freeze'}        # pre-training masking, frozen parts: training
UNUSED_KEYS = {'mask_token'}                     # CroCo pre-training token, unused by the heads
# official state_dict prefix -> ours (our encoder and decoder are submodules)
PREFIXES = {'patch_embed.': 'encoder.patch_embed.', 'enc_blocks.': 'encoder.enc_blocks.',
            'enc_norm.': 'encoder.enc_norm.', 'decoder_embed.': 'decoder.decoder_embed.',
            'dec_blocks.': 'decoder.dec_blocks.', 'dec_blocks2.': 'decoder.dec_blocks2.',
            'dec_norm.': 'decoder.dec_norm.'}
SAFE_GLOBALS = [argparse.Namespace, np.dtype, np._core.multiarray.scalar] + [
    getattr(np.dtypes, name) for name in np.dtypes.__all__]


def _literal(node: ast.AST, where: str):
    """Value of a literal expression node: numbers, strings, None/True/False, inf, tuples."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id == 'inf':
        return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand, where)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e, where) for e in node.elts)
    raise ValueError(f'{where}={ast.unparse(node)!r}: expected a literal (number, string, '
                     'None/True/False, inf, or a tuple of them), not a '
                     f'{type(node).__name__} expression')


def parse_constructor(text: str) -> tuple[str, dict]:
    """'AsymmetricMASt3R(enc_depth=24, ...)' -> ('AsymmetricMASt3R', {'enc_depth': 24, ...}).

    Only a call of a bare class name with literal keyword arguments is accepted; anything else
    (attribute access, nested calls, positional arguments, **kwargs) raises ValueError.
    """
    try:
        tree = ast.parse(text.strip(), mode='eval').body
    except SyntaxError as exc:
        raise ValueError(f'constructor string {text!r}: not Python syntax ({exc.msg})') from None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise ValueError(f'constructor string {text!r}: expected ClassName(key=literal, ...)')
    if tree.args or any(k.arg is None for k in tree.keywords):
        raise ValueError(f'constructor string {text!r}: expected keyword arguments only')
    return tree.func.id, {k.arg: _literal(k.value, k.arg) for k in tree.keywords}


def config_from_kwargs(name: str, kwargs: dict, **overrides) -> MASt3RConfig:
    """MASt3RConfig from the official constructor's class name and keywords (+ overrides)."""
    if name not in MODEL_CLASSES:
        raise ValueError(f'model class {name!r}: expected one of {list(MODEL_CLASSES)}')
    known = {f.name for f in fields(MASt3RConfig)}
    if unknown := kwargs.keys() - known - IGNORED_KWARGS:
        raise ValueError(f'{name}: unknown constructor keywords {sorted(unknown)}; '
                         f'known: {sorted(known | IGNORED_KWARGS)}')
    return MASt3RConfig(**{k: v for k, v in kwargs.items() if k in known}, **overrides)


def constructor_string(cfg: MASt3RConfig) -> str:
    """The inverse of parse_constructor + config_from_kwargs (repr(inf) is 'inf')."""
    return 'AsymmetricMASt3R(' + ', '.join(
        f'{f.name}={getattr(cfg, f.name)!r}' for f in fields(cfg)) + ')'


def read_pth(path: Path) -> tuple[dict, str]:
    """Official checkpoint -> (state_dict, args.model), refusing any non-allow-listed global."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ''
        raise ValueError(f'{path}: refused to unpickle: it needs objects outside the allow-list '
                         f'of a checkpoint ({first})') from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get('model'), dict)
            and isinstance(getattr(ckpt.get('args'), 'model', None), str)):
        raise ValueError(f'{path}: expected a dict with "model" (state_dict) and "args" '
                         '(argparse.Namespace with a .model constructor string)')
    return ckpt['model'], ckpt['args'].model


def to_ours(state: dict) -> dict:
    """Official state_dict keys -> MASt3R's; drops unused and aliased tensors."""
    state = dict(state)
    if not any(k.startswith('dec_blocks2.') for k in state):        # as the official loader
        state.update({k.replace('dec_blocks.', 'dec_blocks2.', 1): v for k, v in state.items()
                      if k.startswith('dec_blocks.')})
    out = {}
    for key, value in state.items():
        if key in UNUSED_KEYS:
            continue
        alias = key.split('.dpt.scratch.layer')
        if len(alias) == 2 and alias[1][0] in '1234' and alias[1][1:] == '_rn.weight':
            i = int(alias[1][0]) - 1                               # layerN_rn == layer_rn[N-1]
            twin = state.get(f'{alias[0]}.dpt.scratch.layer_rn.{i}.weight')
            if twin is None or not torch.equal(twin, value):
                raise ValueError(f'{key}: expected the same tensor as layer_rn.{i}.weight')
            continue
        prefix = next((p for p in PREFIXES if key.startswith(p)), None)
        out[PREFIXES[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def to_official(state: dict) -> dict:
    """MASt3R state_dict keys -> the official names (without the layerN_rn aliases)."""
    back = {v: k for k, v in PREFIXES.items()}
    out = {}
    for key, value in state.items():
        prefix = next((p for p in back if key.startswith(p)), None)
        out[back[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def build(text: str | tuple[str, dict], state: dict, source: str) -> MASt3R:
    """Model from an official constructor (string, or (class name, keywords)) and an
    official-layout state_dict.

    As the official `load_model`, inference uses the plain patch embedding and no landscape
    transposition. DPT widths, fixed in the official factory, are read from the tensors.
    """
    state = to_ours(state)
    try:
        dpt = {'dpt_feature_dim': state['downstream_head1.dpt.scratch.layer_rn.0.weight'].shape[0],
               'dpt_layer_dims': tuple(
                   state[f'downstream_head1.dpt.act_postprocess.{i}.0.weight'].shape[0]
                   for i in range(4))}
    except KeyError as exc:
        raise ValueError(f'{source}: state_dict lacks {exc.args[0]} (not a catmlp+dpt MASt3R)')
    name, kwargs = parse_constructor(text) if isinstance(text, str) else text
    kwargs = {**kwargs, **dpt, 'landscape_only': False, 'patch_embed_cls': 'PatchEmbedDust3R'}
    model = MASt3R(config_from_kwargs(name, kwargs))
    own = model.state_dict()
    missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
    if missing or unexpected:
        raise ValueError(f'{source}: state_dict does not fit {name}: missing {sorted(missing)[:8]}'
                         f' ({len(missing)}), unexpected {sorted(unexpected)[:8]} '
                         f'({len(unexpected)})')
    if bad := [f'{k}: {tuple(v.shape)} vs model {tuple(own[k].shape)}'
               for k, v in state.items() if v.shape != own[k].shape]:
        raise ValueError(f'{source}: tensor shapes do not fit the constructor: {bad[:8]}')
    model.load_state_dict(state)
    return model.eval()


def save_safetensors(model: MASt3R, path: Path) -> None:
    """Official-layout state_dict + its constructor string in the metadata under 'model'."""
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in to_official(model.state_dict()).items()}
    save_file(state, str(path), metadata={'model': constructor_string(model.cfg)})


def _tuples(value):
    """JSON lists -> tuples, recursively (the constructor takes tuples)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def constructor_from_json(data, where: str) -> tuple[str, dict]:
    """(class name, keywords) from a JSON constructor description: {"model": "Asymmetric
    MASt3R(...)"} (our sidecar), or the constructor's keyword arguments themselves (the
    config.json that Hugging Face's PyTorchModelHubMixin writes beside model.safetensors, as
    in the official naver/MASt3R_* repositories; Infinity for inf)."""
    if not isinstance(data, dict):
        raise ValueError(f'{where}: expected a JSON object, got {type(data).__name__}')
    if isinstance(data.get('model'), str):
        return parse_constructor(data['model'])
    kwargs = {k: _tuples(v) for k, v in data.items() if not k.startswith('_')}
    return 'AsymmetricMASt3R', kwargs


def load_mast3r(path) -> torch.nn.Module:
    """Load an official MASt3R .pth or a .safetensors state_dict into MASt3R (eval mode).

    A .safetensors needs its constructor, first found of: metadata key 'model' (a constructor
    string, as save_safetensors writes); a sidecar `<stem>.json`; a `config.json` in the same
    folder (Hugging Face layout: model.safetensors + config.json of keyword arguments). The
    JSON files hold {"model": "AsymmetricMASt3R(...)"} or the keyword arguments
    (constructor_from_json).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'path={str(path)!r}: no such checkpoint file')
    if path.suffix == '.safetensors':
        from safetensors import safe_open
        with safe_open(str(path), framework='pt') as f:
            constructor = (f.metadata() or {}).get('model')
            state = {k: f.get_tensor(k) for k in f.keys()}
        sidecars = [path.with_suffix('.json'), path.parent / 'config.json']
        for sidecar in sidecars:
            if constructor is None and sidecar.is_file():
                constructor = constructor_from_json(json.loads(sidecar.read_text()),
                                                    str(sidecar))
        if constructor is None:
            raise ValueError(f'{path}: no constructor (metadata "model", '
                             f'{sidecars[0].name} or {sidecars[1].name} beside it)')
        return build(constructor, state, str(path))
    state, text = read_pth(path)
    return build(text, state, str(path))
