"""Lunar simulator: terrain, stereo renderer, lander dynamics and ROS sim node."""
