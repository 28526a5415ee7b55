"""Test-session isolation: every run gets its own DDS domain, restricted to this host."""
import os

# A domain per run (0..101 are the portable ones): concurrent runs and other ROS users on the
# machine never see each other. Set before rclpy is imported; child processes inherit it.
os.environ.setdefault('ROS_DOMAIN_ID', str(1 + os.getpid() % 100))
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
