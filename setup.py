"""ament_python package l3d_ros: flight runtime, training and simulator as sibling packages."""
from glob import glob

from setuptools import find_packages, setup

package_name = 'l3d_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['l3d_ros', 'l3d_ros.*', 'l3d_train', 'l3d_train.*',
                                    'l3d_sim', 'l3d_sim.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.launch.py')),
        ('share/' + package_name + '/config', glob('config/*')),
        ('share/' + package_name + '/models', glob('models/*')),
    ],
    install_requires=['setuptools'],
    zip_safe=True,
    maintainer='l3d_ros developers',
    maintainer_email='l3d-ros@example.org',
    description='Lunar stereo hazard detection with distilled 3D foundation models',
    license='Apache-2.0',
    tests_require=['pytest'],
    entry_points={
        'console_scripts': [
            'l3d = l3d_ros.cli:main',
            'l3d_stereo = l3d_ros.node:main',
            'l3d_sim_node = l3d_sim.sim_node:main',
            'l3d_gz_camera_info = l3d_sim.gz_camera_info:main',
            'l3d_guidance = l3d_sim.guidance_node:main',
        ],
    },
)
