"""CLIC fine-tuning of the text tower.

- `config`: the typed training configuration and its file format.
- `loss`: the CLIC and CLIP losses, term by term as in method.md.
- `recipe`: one readable recipe with an explicit lifecycle (setup -> train -> cleanup) and resume state.
- `checkpoint`, `distributed`: atomic checkpoints, torchrun/DDP helpers.
- `job`: a whole training run from a snapshot (records, tracking, output folder).
- `anchors`: anchor distillation texts; `interpolate`: WiSE-FT weight blending of the text tower.
"""
