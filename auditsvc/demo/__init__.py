"""The procedural tank demo: forest scenes, a shortcut and a clean tank detector, a probe set."""
