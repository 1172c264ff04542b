"""Battery sections; importing this package registers them all."""

from . import activation_max, embedding, explanation_checks, filters, layer_outputs, looking, neurons, occlusion, performance, saliency, shortcuts, similarity, summary, top_patches  # noqa: F401
