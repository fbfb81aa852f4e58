"""Can a demo base's text tower learn relations at all against its frozen image tower? (issue #19)

    python bench/demo_text_capacity.py --base MODEL [--scenes 3000] [--steps 4000]

The cleanest possible teacher: N two-object scenes from a stream of their own, each captioned in the training
frame "{a} {rel} {b}." with three hard negatives (objects swapped, relation replaced by its opposite, colours
swapped). Only the text tower trains, on the CLIP loss plus a softmax over [positive, its three negatives] for
each image (image embeddings computed once: the image tower is frozen). Scored every 1,000 steps on the 600
fresh training-wording items of bench/demo_clic_diagnosis.py (pairwise accuracy per kind, chance 50), the very
items the CLIC runs are read on. If this learns relations and CLIC on the domain does not, the CLIC run's
data or negatives are what fall short, not the towers.

Appends one JSON line to bench/results/demo-text-capacity.jsonl. One torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from run_records import append_record, head_commit

RESULTS = Path("bench/results/demo-text-capacity.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True)
    parser.add_argument("--scenes", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    import torch
    from demo_clic_diagnosis import NEGATIVE_KINDS, training_wording_items

    from toolkit.adapters.loading import load_model
    from toolkit.demo import scenes
    from toolkit.demo.pretrain import encode_text_trimmed, trim_padding
    from toolkit.demo.probe import embed, single_view

    torch.set_num_threads(1)
    commit = head_commit()
    started = time.perf_counter()
    adapter = load_model(args.base)
    model, norm = adapter.model, adapter.image_norm

    def images(drawn: list[Any]) -> torch.Tensor:
        return torch.cat([embed(adapter, torch.stack([single_view(scenes.render(s, norm.size), norm)
                                                     for s in drawn[i:i + 500]]))
                          for i in range(0, len(drawn), 500)])

    train = training_wording_items(args.scenes, seed=0, stream="text-capacity-train")
    train_scenes = [item.scene for item in train]
    train_images = images(train_scenes)
    # [positive, objects swapped, relation opposite, colours swapped] per scene
    train_tokens = adapter.tokenize([text for item in train for text in (item.positive, *(
        item.negatives[kind] for kind in ("swap_obj", "replace_rel", "swap_att")))]).view(len(train), 4, -1)
    test = training_wording_items(600)
    test_images = images([item.scene for item in test])
    test_positive = adapter.tokenize([item.positive for item in test])
    test_negative = {kind: adapter.tokenize([item.negatives[kind] for item in test]) for kind in NEGATIVE_KINDS}

    def score() -> dict[str, float]:
        model.eval()
        with torch.inference_mode():
            positive = (test_images * adapter.encode_text(test_positive, normalize=True)).sum(-1)
            out = {kind: round(100 * float((positive > (test_images * adapter.encode_text(
                tokens, normalize=True)).sum(-1)).double().mean()), 1) for kind, tokens in test_negative.items()}
        model.train()
        return out

    curve: list[dict[str, Any]] = [{"step": 0, "fresh": score()}]
    print(json.dumps(curve[-1]), flush=True)
    text_side = [p for name, p in model.named_parameters() if not name.startswith("visual.")]
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("visual."))
    optimiser = torch.optim.AdamW(text_side, lr=1e-3, weight_decay=0.1)
    scale = model.logit_scale.exp().detach().clamp(max=50.0)
    generator = torch.Generator().manual_seed(0)
    fn = torch.nn.functional
    model.train()
    for step in range(1, args.steps + 1):
        for group in optimiser.param_groups:
            group["lr"] = 1e-3 * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        batch = torch.randint(0, len(train_scenes), (args.batch,), generator=generator)
        texts = fn.normalize(encode_text_trimmed(model, trim_padding(train_tokens[batch].reshape(4 * args.batch, -1))),
                             dim=-1).view(args.batch, 4, -1)
        image = train_images[batch]
        logits = scale * image @ texts[:, 0].T
        labels = torch.arange(args.batch)
        hard = scale * torch.einsum("bd,bkd->bk", image, texts)
        loss = (fn.cross_entropy(logits, labels) + fn.cross_entropy(logits.T, labels)) / 2 \
            + fn.cross_entropy(hard, torch.zeros(args.batch, dtype=torch.long))
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        if step % 1000 == 0 or step == args.steps:
            batch_accuracy = float((hard.argmax(-1) == 0).double().mean())
            curve.append({"step": step, "loss": round(float(loss.detach()), 3),
                          "training_batch_all_three": round(batch_accuracy, 3), "fresh": score()})
            print(json.dumps(curve[-1]), flush=True)
    record = {"base": args.base, "scenes": args.scenes, "steps": args.steps, "batch": args.batch, "commit": commit,
              "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": round(time.perf_counter() - started, 1), "curve": curve}
    append_record(RESULTS, record)


if __name__ == "__main__":
    main()
