"""Battery sections; importing this package registers them all."""

from . import filters, layer_outputs, looking, occlusion, performance, saliency, shortcuts, summary  # noqa: F401
