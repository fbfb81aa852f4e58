"""The torch-free serving runtime: bundle manifest, CLIP tokenizer and ONNX Runtime text encoder.

It imports neither torch nor `toolkit.export` (an import contract checks this), so serving needs only
onnxruntime and numpy (ftfy optional):

    from toolkit.runtime import TextEncoder
    vectors = TextEncoder("bundle/").encode(["a red cube left of a blue ball"])
"""

from toolkit.runtime.encoder import ProviderError, TextEncoder
from toolkit.runtime.manifest import BundleError, verify_bundle

__all__ = ["BundleError", "ProviderError", "TextEncoder", "verify_bundle"]
