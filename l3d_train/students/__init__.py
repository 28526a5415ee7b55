"""Stereo students (and a family-architecture teacher) for distillation: specs, model, counts."""
from l3d_train.students.model import count_flops, count_params, StereoStudent
from l3d_train.students.spec import FAMILY, FLIGHT, get_spec, StudentSpec, TEACHER

__all__ = ['FAMILY', 'FLIGHT', 'StereoStudent', 'StudentSpec', 'TEACHER', 'count_flops',
           'count_params', 'get_spec']
