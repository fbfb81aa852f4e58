// The HF layout (`toolkit export --layout hf`) in transformers.js, offline, local files only.
//   node check_transformers.mjs BUNDLE_DIR
import { AutoTokenizer, CLIPTextModelWithProjection, env } from "@huggingface/transformers";
import { basename, dirname, resolve } from "node:path";
import { TOLERANCE, inputText, maxAbsDiff, readConformance, report, sameIds } from "./common.mjs";

const bundle = resolve(process.argv[2]);
env.allowRemoteModels = false; // never reach the Hub
env.allowLocalModels = true;
env.localModelPath = dirname(bundle) + "/";
const name = basename(bundle);
const { cases } = readConformance(bundle);
const tokenizer = await AutoTokenizer.from_pretrained(name, { local_files_only: true });
const model = await CLIPTextModelWithProjection.from_pretrained(name, { local_files_only: true, dtype: "fp32" });

const compared = cases.filter((item) => item.client !== "ftfy");
const divergent = cases.filter((item) => item.client === "ftfy").map((item) => item.name);
const failures = [];
// One padded, truncated batch, as an application would send it.
const inputs = tokenizer(compared.map(inputText), { padding: true, truncation: true });
const { text_embeds: embeds } = await model(inputs);
const dim = embeds.dims[1];
compared.forEach((item, row) => {
  const ids = Array.from(inputs.input_ids[row].data, Number);
  const kept = ids.slice(0, item.ids.length);
  // transformers.js truncates after adding the specials: a long caption may lack <eot> (the guard adds it).
  const expected = item.ids.slice(0, -1);
  if (!sameIds(kept, item.ids) && !sameIds(kept.slice(0, -1), expected)) {
    failures.push(`${item.name}: ids ${JSON.stringify(kept)} != ${JSON.stringify(item.ids)}`);
  }
  const diff = maxAbsDiff(embeds.data.slice(row * dim, (row + 1) * dim), item.embedding);
  if (diff > TOLERANCE) failures.push(`${item.name}: embedding max abs diff ${diff}`);
});
report("transformers.js CLIPTextModelWithProjection", failures, compared.length, divergent);
