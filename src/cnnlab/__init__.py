"""cnnlab: reproducible CNN image-classification experiments driven by DVC."""

__version__ = "0.1.0"
