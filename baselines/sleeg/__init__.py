"""SLEEG (Tu et al., AAAI 2023): an OoD head on a frozen closed-set segmenter, trained on anomalies
pasted from other images (patches), with the TAE / TORE losses and Otsu refinement (losses), its
training data (data) and its anomaly evaluation (evaluate)."""
