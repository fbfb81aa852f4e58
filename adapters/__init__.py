"""Model families behind one interface: open_clip checkpoints, Hugging Face CLIP folders, run folders.

- `base`: the `ClipAdapter` interface every family implements (text/image towers, tokenizer, weights).
- `loading`: the one model-spec parser (`open_clip:…`, `hf:…`, a run folder) and the family registry.
- `weights`, `outputs`: safe weight loading and hashing; run folders that appear whole, with `model.json`.

This folder is the design card's top-level `adapters/`; it is installed only as `toolkit.adapters`.
"""

if __name__ != "toolkit.adapters":  # one module, one name: never a generic top-level `adapters`
    raise ImportError(f"import this package as toolkit.adapters, not {__name__}")
