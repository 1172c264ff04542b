"""Interpretability methods as plain functions on graphs and tensors: attribution,
feature visualization, representation similarity, saliency checks."""
