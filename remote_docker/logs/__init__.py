"""A container's log: the Engine API's frames and cursor (stream), and the task-log lines (follower)."""
