"""auditsvc: audits trained image-classification CNNs."""

import os
from pathlib import Path

__version__ = "0.1.0"

# Jinja2 templates of the reports and the portal; the sandboxed child reads them too. Beside the
# package in a checkout; an installed package (docker/) names them with AUDITSVC_TEMPLATES.
TEMPLATE_DIR = Path(os.environ.get("AUDITSVC_TEMPLATES") or Path(__file__).resolve().parent.parent / "templates")
