"""Training data: a snapshot's records become CLIC samples (pure plans), then images and batches.

- `samples`: pure sample planning (pairs, sentences, which negative) over plain records.
- `datasets`: image loading and the torch datasets for CLIC and plain steps.
- `tiles`, `tile_cache`: pre-sized image tiles prepared once per snapshot, read back verified.
- `batches`: collation into the `[p1 | p2 | p3 | p4 | n]` text layout the loss expects.
"""
