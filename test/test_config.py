from pathlib import Path

import pytest
import yaml

from l3d_ros.config import (default_config_path, flatten, from_dict, HazardConfig,
                            load_node_config, read_params_file, StereoNodeConfig, unflatten,
                            with_updates)


def test_shipped_file_loads_and_matches_dataclass_fields():
    cfg = load_node_config()
    assert cfg.hazard.footprint_m == 4.0 and cfg.hazard.slope_max_deg == 10.0
    assert cfg.hazard.roughness_max_m == pytest.approx(0.30)
    # every node parameter is written in the file, so a user sees them all in one place
    written = flatten_mapping(read_params_file()['l3d_stereo'])
    assert set(written) == set(flatten(StereoNodeConfig()))


def flatten_mapping(raw, prefix=''):
    out = {}
    for k, v in raw.items():
        if isinstance(v, dict):
            out.update(flatten_mapping(v, f'{prefix}{k}.'))
        else:
            out[f'{prefix}{k}'] = v
    return out


def test_flatten_unflatten_round_trip():
    cfg = StereoNodeConfig()
    assert from_dict(StereoNodeConfig, unflatten(flatten(cfg))) == cfg


def test_unknown_key_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match=r"hazard: unknown keys \['footprint'\]"):
        from_dict(StereoNodeConfig, {'hazard': {'footprint': 3.0}})


@pytest.mark.parametrize('update, fragment', [
    ({'hazard.slope_max_deg': 95.0}, 'hazard.slope_max_deg=95.0: expected (0, 90)'),
    ({'hazard.site_margin_max': 1.5}, 'hazard.site_margin_max=1.5: expected [0, 1]'),
    ({'sgbm.block_size': 4}, 'sgbm.block_size=4'),
    ({'sgbm.num_disparities': 20}, 'multiple of 16'),
    ({'backend': 'magic'}, "backend='magic'"),
    ({'depth_max_m': 5.0}, 'depth_max_m=5.0'),
    ({'sync.mode': 'fuzzy'}, "sync.mode='fuzzy'"),
    ({'qos.depth': 'five'}, "qos.depth='five': expected int"),
])
def test_invalid_values_name_value_and_expectation(update, fragment):
    with pytest.raises(ValueError) as err:
        with_updates(StereoNodeConfig(), update)
    assert fragment in str(err.value)


def test_int_given_for_float_is_accepted():
    assert with_updates(StereoNodeConfig(), {'hazard.footprint_m': 5}).hazard.footprint_m == 5.0


def test_hazard_cell_must_resolve_the_footprint():
    with pytest.raises(ValueError, match='hazard.cell_m=2.0'):
        HazardConfig(cell_m=2.0)


def test_params_file_shape_is_checked(tmp_path: Path):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'l3d_stereo': {'backend': 'sgbm'}}))
    with pytest.raises(ValueError, match='ros__parameters'):
        read_params_file(bad)


def test_default_path_is_the_package_config():
    assert default_config_path().name == 'lunar_stereo.yaml' and default_config_path().is_file()
