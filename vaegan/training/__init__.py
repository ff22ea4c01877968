"""Training: the trainer (set-up, loop, state), the update of one iteration, losses, augmentation, EMA.
"""
