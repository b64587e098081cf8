"""Names users and the MLflow UI rely on (params every run carries), written once for the tests."""

# The params every trial and run carries, so the UI's parallel coordinates can show every run.
UNIFORM_PARAMS = (
    "n_layers",
    "hidden",
    "n_params",
    "activation",
    "optimizer",
    "learning_rate",
    "log10_learning_rate",
    "lr_decay_fraction",
    "lr_decay_final",
    "epochs",
    "seed",
    "objective",
    "problem",
)
