"""Every limit an upload is held to, in one place (the README's threat model lists them).

Checked before any work starts: a file, a model.json or a probe set past one of these is
refused with one line that names the limit.
"""

# model files
MAX_MODEL_BYTES = 2 * 1024**3
MAX_MODEL_UNPACKED_BYTES = 4 * 1024**3   # a model archive's members, uncompressed
MAX_MODEL_MEMBERS = 100_000              # members of a model archive
MAX_MODEL_CONFIG_BYTES = 64 * 1024**2    # one JSON member of a .pt2 (the graph, a payload config)

# probe sets
MAX_IMAGES = 100_000
MAX_IMAGE_PIXELS = 64_000_000          # larger images are treated as decompression bombs
MAX_UNCOMPRESSED_BYTES = 8 * 1024**3   # whole zip, uncompressed
MAX_COMPRESSION_RATIO = 200            # per zip member; beyond it the member is a zip bomb
