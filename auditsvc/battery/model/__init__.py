"""The model side: reading a model file safely, its graph, a fast copy, receptive fields."""
