// A bundle in plain Node: onnxruntime-node for the graph, @huggingface/tokenizers for tokenizer.json.
//   node check_bundle.mjs BUNDLE_DIR
// Checks ids and embeddings against conformance.jsonl, then the input guard: padding to 77 with an
// attention_mask, and an over-long row without <eot>, must give the exact-length embedding.
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { join } from "node:path";
import { TOLERANCE, inputText, maxAbsDiff, readConformance, readJson, report, sameIds } from "./common.mjs";

const bundle = process.argv[2];
const { manifest, cases } = readConformance(bundle);
const contract = manifest.client_contract;
const tokenizer = new Tokenizer(readJson(bundle, "tokenizer.json"), readJson(bundle, "tokenizer_config.json"));
const session = await ort.InferenceSession.create(join(bundle, manifest.variants.fp32.file));

async function embed(rows, mask) {
  const width = rows[0].length;
  const flat = BigInt64Array.from(rows.flat().map((v) => BigInt(v)));
  const feeds = { [manifest.input_name]: new ort.Tensor("int64", flat, [rows.length, width]) };
  if (mask) feeds.attention_mask = new ort.Tensor("int64", BigInt64Array.from(mask.flat().map(BigInt)), [rows.length, width]);
  const out = await session.run(feeds);
  const data = out[manifest.output_name].data;
  const dim = data.length / rows.length;
  return rows.map((_, r) => data.slice(r * dim, (r + 1) * dim));
}

const failures = [];
const divergent = [];
let checked = 0;
for (const item of cases) {
  if (item.client === "ftfy") {
    divergent.push(item.name);
    continue;
  }
  checked++;
  // This library does not apply tokenizer.json's truncation: the manifest's rule, written out, cuts the ids;
  // the graph is fed the uncut ids and its guard must cut them the same way.
  const full = tokenizer.encode(inputText(item)).ids.map(Number);
  const max = contract.max_sequence_length;
  const ids = full.length > max ? [...full.slice(0, max - 1), contract.eot_id] : full;
  if (!sameIds(ids, item.ids)) {
    failures.push(`${item.name}: ids ${JSON.stringify(ids)} != ${JSON.stringify(item.ids)}`);
    continue;
  }
  for (const [label, row] of [["", ids], [" (uncut, guard truncates)", full]]) {
    const [exact] = await embed([row]);
    const diff = maxAbsDiff(exact, item.embedding);
    if (diff > TOLERANCE) failures.push(`${item.name}${label}: embedding max abs diff ${diff}`);
  }
  // Padded to 77 (any pad value) with a mask: the same embedding.
  const padded = [...ids, ...Array(77 - ids.length).fill(contract.pad_id)];
  const mask = padded.map((_, i) => (i < ids.length ? 1 : 0));
  const [viaPadding] = await embed([padded], [mask]);
  const padDiff = maxAbsDiff(viaPadding, item.embedding);
  if (padDiff > TOLERANCE) failures.push(`${item.name}: padded to 77 + attention_mask, max abs diff ${padDiff}`);
}
// Over the context without <eot> (truncated after the specials, as transformers.js does): the guard puts
// <eot> last, so the embedding is the CLIP-truncated caption's.
const long = cases.find((item) => item.name === "long");
const untruncated = [contract.sot_id, ...tokenizer.encode(long.text, { add_special_tokens: false }).ids.map(Number)];
if (untruncated.length <= contract.max_sequence_length) failures.push("long: caption is not longer than the context");
const [guarded] = await embed([untruncated.slice(0, 77)]);
const longDiff = maxAbsDiff(guarded, long.embedding);
if (longDiff > TOLERANCE) failures.push(`long without <eot>: max abs diff ${longDiff}`);
checked++;
report("onnxruntime-node + @huggingface/tokenizers", failures, checked, divergent);
