"""Shortcut and dataset-bias probes: properties, interventions, where the model looks, the verdict."""
