"""auditsvc: audits trained image-classification CNNs."""

from pathlib import Path

__version__ = "0.1.0"

# Jinja2 templates of the reports and the portal, shipped inside the package (the sandboxed child
# reads them too). The top-level templates/ of a checkout is a link to this folder.
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
