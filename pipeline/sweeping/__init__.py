"""Optuna: the search space, studies, trials in populations, workers, the study run, its books."""
