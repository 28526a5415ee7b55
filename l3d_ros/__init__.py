"""l3d_ros flight runtime: numpy/OpenCV cores, onnxruntime students, thin rclpy nodes.

Never imports torch.
"""
