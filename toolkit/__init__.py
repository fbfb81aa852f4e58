"""CLIC adaptation toolkit: teach a CLIP text encoder composition, on-prem.

Importing this package stays cheap (no torch), because `toolkit.runtime.encoder` must work
in an environment that has only onnxruntime and numpy.
"""

__version__ = "0.1.0"
