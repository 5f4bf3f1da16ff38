"""baselines: backbones, heads, models, losses, the training engine and evaluation."""
