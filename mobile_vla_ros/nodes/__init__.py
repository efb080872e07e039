"""Thin rclpy nodes wiring the pure logic to topics, services and parameters."""
