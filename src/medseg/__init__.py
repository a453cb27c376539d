"""medseg: self-configuring medical image segmentation.

Arrays are channel first, spatial axes in (z, y, x) order; spacings in millimetres in the
same order. See docs/architecture.md for the pipeline and where each stage lives.
"""

__version__ = "0.1.0"
