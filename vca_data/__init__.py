"""vca_data: the shared data layer of vca-toolkit: label spaces, file formats, datasets, flow, metrics."""
