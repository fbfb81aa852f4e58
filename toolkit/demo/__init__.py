"""The generated demo domain (coloured shapes with sizes and spatial relations) and its small base CLIP.

- `scenes`: pure scene sampling, rendering (PIL) and captions (alt-text style and multi-sentence).
- `generate`: writes PNG folders, JSONL manifests and the held-out evaluation files.
- `pretrain`: pretrains the base CLIP (both towers, plain symmetric contrastive loss).
- `measure`: swap-attribute accuracy, two-object retrieval and single-object zero-shot on held-out sets.
"""
