"""Every limit an upload is held to, in one place (the README's threat model lists them).

Checked before any work starts: a file, a model.json or a probe set past one of these is
refused with one line that names the limit.
"""

# --- model files ---------------------------------------------------------------------------
MAX_MODEL_BYTES = 2 * 1024**3
MAX_MODEL_UNPACKED_BYTES = 4 * 1024**3   # a model archive's members, uncompressed
MAX_MODEL_MEMBERS = 100_000              # members of a model archive
MAX_MODEL_CONFIG_BYTES = 64 * 1024**2    # one JSON member of a .pt2 (the graph, a payload config)
# model.onnx: a ResNet-152 has about 500 nodes, an EfficientNet-B7 a few thousand.
MAX_ONNX_NODES = 20_000
# Any value the converted graph computes, per image (checked on the example batch while converting, and
# before a Resize, Pad or ConvTranspose makes it): a 64-channel 1024x1024 map is 67 million.
MAX_ONNX_VALUE_ELEMENTS = 2**27

# --- model.json ------------------------------------------------------------------------------
# A real model.json is a few KiB; 10,000 class names of 100 characters still fit in 1 MiB.
MAX_META_BYTES = 1024**2
# The format itself needs depth 3 ({"input": {"size": [...]}}); extra keys may nest a little more.
# Checked without recursion, before json parses the text (which would raise RecursionError).
MAX_META_DEPTH = 32
MAX_NAME_CHARS = 200          # ModelVersion.name is a CharField(max_length=200)
MAX_VERSION_CHARS = 100       # ModelVersion.version is a CharField(max_length=100)
MAX_RELEASE_TAG_CHARS = 200   # ModelVersion.release_tag is a CharField(max_length=200): not in model.json,
                              # the service checks it with meta.check_release_tag
MAX_CLASS_NAME_CHARS = 200    # drawn in reports and used as folder names in probe sets
MIN_CLASSES = 2
# The product is used with 2 to 1,000 classes; 10,000 leaves room and keeps reports and the
# per-class sections bounded.
MAX_CLASSES = 10_000
MIN_INPUT_SIDE = 8            # input height and width, pixels
MAX_INPUT_SIDE = 1024
# Pixels are scaled to [0, 1] before (x - mean) / std: a std below this turns every input
# into huge numbers (1e-300 made them infinite), a mean beyond this is not a normalization.
MIN_STD = 1e-6
MAX_STD = 1e3
MAX_ABS_MEAN = 1e3
MAX_META_INT_BITS = 64        # any integer in model.json, extra keys included (databases store 64 bits)

# --- probe sets --------------------------------------------------------------------------------
MAX_IMAGES = 100_000
MAX_IMAGE_PIXELS = 64_000_000          # larger images are treated as decompression bombs
MAX_IMAGE_BYTES = 256 * 1024**2        # one image file (checked with stat, or the zip header, before reading)
MAX_UNCOMPRESSED_BYTES = 8 * 1024**3   # whole zip, uncompressed
MAX_COMPRESSION_RATIO = 200            # per zip member; beyond it the member is a zip bomb
MAX_FILES = 200_000                    # zip members or directory entries, ignored ones (__MACOSX, ...) included
# The zip's central directory (about 150 bytes an entry), checked before the zip module parses it:
# millions of tiny entries would otherwise cost gigabytes of memory before MAX_FILES is seen.
MAX_ZIP_DIRECTORY_BYTES = 32 * 1024**2
MAX_PATH_CHARS = 512                   # a file's path inside the set: <class (<= 200)>/<file name>
MAX_FILE_NAME_CHARS = 255              # one path component, as on common file systems

# --- manifest.csv ----------------------------------------------------------------------------
MAX_MANIFEST_BYTES = 32 * 1024**2      # 100,000 rows of about 300 bytes
MAX_ATTRIBUTE_COLUMNS = 50             # columns besides path, label and the box
MAX_COLUMN_NAME_CHARS = 100
MAX_ATTRIBUTE_VALUE_CHARS = 200        # attribute values are drawn in reports
# Any one field (paths included); well under the csv module's own limit of 131,072, so an
# over-long field gets this message rather than the module's error.
MAX_MANIFEST_FIELD_CHARS = 1024
