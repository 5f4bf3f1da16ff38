"""analysis: features, masked-average-pool prototypes, dendrograms and dataset statistics."""
