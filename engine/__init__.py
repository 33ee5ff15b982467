"""The training engine: optimizer, schedule, checkpoints of a run, resume checks, meters, the monitor."""
