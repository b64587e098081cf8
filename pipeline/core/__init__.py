"""Pure numerics: problems, data, networks, losses, optimizers and the trainer.

TensorFlow, NumPy and SymPy only: nothing here imports MLflow, Optuna or the other subpackages.
"""
