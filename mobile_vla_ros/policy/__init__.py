"""The policy, torch only (no ROS): Kosmos-2 + LoRA frame encoder, instruction-conditioned action
head, incremental runner and checkpoints. Import submodules directly (torch is heavy)."""
