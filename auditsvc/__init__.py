"""auditsvc: audits trained image-classification CNNs."""

__version__ = "0.1.0"
