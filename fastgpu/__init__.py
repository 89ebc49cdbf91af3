"""FastGPU: measure which GPU optimisation settings pay off for your model."""

__version__ = "0.1.0"
