"""Export of the text encoder to ONNX, verified against torch, and staged rollout of the bundle.

- `onnx_text`, `onnx_image`: the graphs; `optimize`: fp16 and int8 variants.
- `parity`: torch against ONNX Runtime on held-out captions; `approval`: variants re-scored on benchmarks.
- `bundle`: the bundle folder and its manifest; `rollout`: shadow and canary comparison of two bundles.

This folder is the design card's top-level `export/`; it is installed only as `toolkit.export`.
"""

if __name__ != "toolkit.export":  # one module, one name: never a generic top-level `export`
    raise ImportError(f"import this package as toolkit.export, not {__name__}")
