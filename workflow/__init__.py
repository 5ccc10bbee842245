"""Edge-vision reproducibility workflow: one module per stage (``python -m workflow.<stage>``)."""
