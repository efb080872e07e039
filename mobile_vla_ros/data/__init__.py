"""Episode files, image conversion and training windows. No ROS imports here."""
