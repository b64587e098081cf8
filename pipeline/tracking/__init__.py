"""MLflow: runs, recording, plots, the spool of finished trials and outages, the study browsers."""
