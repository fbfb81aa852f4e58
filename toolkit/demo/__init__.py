"""The generated demo domain (coloured shapes with sizes and spatial relations) and its small base CLIP.

- `scenes`: pure scene sampling, rendering (PIL) and captions (alt-text style and multi-sentence).
- `generate`: writes PNG folders, JSONL manifests and the held-out evaluation files.
- `pretrain`: pretrains the base CLIP (both towers, plain symmetric contrastive loss).
- `chain`: `toolkit demo run`, the whole product path on this domain, scored with `toolkit.eval.evaluate`.
"""
