"""Pure control logic (chunk execution, limits, watchdogs, teleop mapping). No ROS imports here."""
