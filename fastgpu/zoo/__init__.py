"""What a run is built from: models and datasets."""
