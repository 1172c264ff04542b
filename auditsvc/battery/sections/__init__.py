"""Battery sections; importing this package registers them all."""

from . import embedding, explanation_checks, filters, layer_outputs, looking, neurons, occlusion, performance, saliency, shortcuts, similarity, summary  # noqa: F401
