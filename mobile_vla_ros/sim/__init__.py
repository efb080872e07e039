"""A small holonomic-robot room simulator with a first-person camera. No ROS imports here."""
