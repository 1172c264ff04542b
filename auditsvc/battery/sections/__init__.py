"""Battery sections; importing this package registers them all."""

from . import filters, layer_outputs, occlusion, performance, saliency, summary  # noqa: F401
