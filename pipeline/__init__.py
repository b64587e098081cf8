"""Hyperparameter sweeps and experiment tracking for GradientTape-trained TensorFlow networks."""
