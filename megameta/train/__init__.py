"""DeepSpeed training: engine set-up, loop, schedules, checkpoints, metrics."""
