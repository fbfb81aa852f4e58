// Shared by the two checks: read a bundle's conformance vectors and compare embeddings.
import { readFileSync } from "node:fs";
import { join } from "node:path";

export const TOLERANCE = 1e-5; // max abs difference per embedding value

export function readJson(bundle, name) {
  return JSON.parse(readFileSync(join(bundle, name), "utf8"));
}

export function readConformance(bundle) {
  const manifest = readJson(bundle, "manifest.json");
  const lines = readFileSync(join(bundle, manifest.client_contract.conformance), "utf8").split("\n");
  return { manifest, cases: lines.filter((line) => line.trim()).map((line) => JSON.parse(line)) };
}

// The text a client following the contract tokenizes: raw for "standard" cases, the contract's cleaned
// text for "cleaning" cases; "ftfy" cases need Python's ftfy and are listed, not compared.
export function inputText(item) {
  return item.client === "cleaning" ? item.cleaned : item.text;
}

export function maxAbsDiff(a, b) {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

export function sameIds(a, b) {
  return a.length === b.length && a.every((v, i) => Number(v) === Number(b[i]));
}

// Prints one line per failure and the closing summary; exits non-zero on any failure.
export function report(label, failures, checked, divergent) {
  for (const line of failures) console.log(`FAIL ${line}`);
  console.log(`${label}: ${checked} cases checked, ${failures.length} failed; ftfy-only (not compared): ` +
    `${divergent.join(", ") || "none"}`);
  process.exit(failures.length ? 1 : 0);
}
