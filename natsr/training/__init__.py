"""Training: the step loop and stage driver of the three trainers, a trial's checkpoints, tf.distribute."""
