"""maple_data: media extraction, RMT annotation, review and benchmark building.

Kept import-light: heavy dependencies (OpenCV, PyAV, datasets) load in the modules
that need them.
"""

__version__ = "0.1.0"
