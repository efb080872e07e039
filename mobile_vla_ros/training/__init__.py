"""Fine-tuning (PyTorch Lightning) and offline evaluation of the policy. No ROS imports here."""
