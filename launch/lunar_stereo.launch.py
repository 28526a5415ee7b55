"""ros2 launch l3d_ros lunar_stereo.launch.py [config:=FILE] [namespace:=NS] [with_sim:=true]

Starts the perception node `l3d_stereo` (and optionally the simulator feeding it) with the
package's config/lunar_stereo.yaml. The node list comes from l3d_ros.bringup.launch_nodes, the
same list `l3d bringup` starts, so the two cannot diverge.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from l3d_ros.bringup import dds_environment, launch_nodes


def _nodes(context):
    params_file = LaunchConfiguration('config').perform(context)
    namespace = LaunchConfiguration('namespace').perform(context)
    with_sim = LaunchConfiguration('with_sim').perform(context).lower() in ('1', 'true', 'yes')
    # the Fast DDS profile `l3d bringup` gives its nodes (large images under best effort)
    dds = [SetEnvironmentVariable(name, value)
           for name, value in dds_environment(os.environ).items()]
    return dds + [Node(package=n.package, executable=n.executable, name=n.name,
                       namespace=n.namespace, parameters=[params_file],
                       remappings=list(n.remappings), output='screen', emulate_tty=True)
                  for n in launch_nodes(params_file, namespace, with_sim)]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory('l3d_ros'), 'config',
                                  'lunar_stereo.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=default_config,
                              description='ROS 2 parameter file of every l3d node (YAML)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the nodes; topics are relative'),
        DeclareLaunchArgument('with_sim', default_value='false',
                              description='also start the lunar simulator node (true/false)'),
        OpaqueFunction(function=_nodes),
    ])
