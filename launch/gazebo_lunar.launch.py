"""ros2 launch l3d_ros gazebo_lunar.launch.py world:=OUT/world.sdf [config:=FILE] [namespace:=NS]

Gazebo (gz-sim) lunar scene -> ROS 2 -> the perception node. Make the world first with
`l3d sim gazebo-world OUT` (terrain heightmap, low sun with shadows, lunar gravity, a lander with
two down-looking cameras). This starts gz-sim through ros_gz_sim's gz_sim.launch.py, bridges the
cameras with ros_gz_bridge's parameter_bridge onto the node's relative inputs
(left/image_rect, right/image_rect, left/camera_info; the right camera_info through
l3d_gz_camera_info, which adds the stereo baseline gz-sim leaves out) and runs `l3d_stereo`
(package l3d_ros) with config/lunar_stereo.yaml from the package share.
Needs a ROS 2 Jazzy/Kilted install with ros_gz (ros-<distro>-ros-gz).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, IncludeLaunchDescription,
                            SetEnvironmentVariable)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from l3d_ros.bringup import dds_environment

# gz topic -> (ROS topic relative to the namespace, ROS type, gz type); kept equal to
# l3d_sim.gazebo.GZ_TOPICS (test/test_gazebo.py checks it)
BRIDGED = (
    ('l3d/left/image', 'left/image_rect', 'sensor_msgs/msg/Image', 'gz.msgs.Image'),
    ('l3d/right/image', 'right/image_rect', 'sensor_msgs/msg/Image', 'gz.msgs.Image'),
    ('l3d/left/camera_info', 'left/camera_info', 'sensor_msgs/msg/CameraInfo',
     'gz.msgs.CameraInfo'),
    # gz-sim leaves the right P's Tx at 0: l3d_gz_camera_info adds the baseline and
    # republishes it as right/camera_info
    ('l3d/right/camera_info', 'gz/right/camera_info', 'sensor_msgs/msg/CameraInfo',
     'gz.msgs.CameraInfo'),
)


def generate_launch_description():
    share = get_package_share_directory('l3d_ros')
    params_file = LaunchConfiguration('config')
    namespace = LaunchConfiguration('namespace')
    gz_sim = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(
            get_package_share_directory('ros_gz_sim'), 'launch', 'gz_sim.launch.py')),
        launch_arguments={'gz_args': ['-r ', LaunchConfiguration('world')]}.items())
    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', name='l3d_gz_bridge',
        namespace=namespace,
        arguments=[f'/{gz}@{ros_type}[{gz_type}' for gz, _, ros_type, gz_type in BRIDGED]
        + ['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock'],
        remappings=[(f'/{gz}', ros) for gz, ros, _, _ in BRIDGED],
        parameters=[{'use_sim_time': True}], output='screen')
    baseline = Node(
        package='l3d_ros', executable='l3d_gz_camera_info', name='l3d_gz_camera_info',
        namespace=namespace, parameters=[{'config': params_file, 'use_sim_time': True}],
        output='screen')
    stereo = Node(
        package='l3d_ros', executable='l3d_stereo', name='l3d_stereo', namespace=namespace,
        parameters=[params_file, {'use_sim_time': True}], output='screen', emulate_tty=True)
    return LaunchDescription([
        DeclareLaunchArgument('world', description='world.sdf written by `l3d sim gazebo-world`'),
        DeclareLaunchArgument('config', default_value=os.path.join(share, 'config',
                                                                   'lunar_stereo.yaml'),
                              description='ROS 2 parameter file of the l3d nodes (YAML)'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the bridge and node; topics relative'),
        # the bridge writes the camera images: the Fast DDS profile of `l3d bringup` (large
        # images under best effort), unless the user chose a transport
        *[SetEnvironmentVariable(name, value)
          for name, value in dds_environment(os.environ).items()],
        gz_sim, bridge, baseline, stereo,
    ])
