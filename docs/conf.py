"""Sphinx configuration for astropix-hil."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

project = "astropix-hil"
author = "astropix-hil developers"
copyright = "2026, astropix-hil developers"  # noqa: A001
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Optional extras: the docs build documents their modules without installing them.
autodoc_mock_imports = ["pyftdi", "usb", "yaml",
                        "matplotlib", "scipy", "astropy", "h5py", "pyarrow"]
nitpicky = False
html_theme = "alabaster"
exclude_patterns = ["_build"]
suppress_warnings = ["autodoc.import_object"]
