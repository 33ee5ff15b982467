"""The augmentations of SPEC section 4 that the feeders and pretraining apply to clips."""
