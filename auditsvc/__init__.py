"""auditsvc: audits trained image-classification CNNs."""

from pathlib import Path

__version__ = "0.1.0"

# Jinja2 templates of the reports and the portal; the sandboxed child reads them too.
TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates"
