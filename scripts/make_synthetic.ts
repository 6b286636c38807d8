/**
 * Regenerates the synthetic world under data_file/ (deterministic: the same files every run).
 *
 *     deno run -A scripts/make_synthetic.ts [--out=data_file] [--seed=N]
 *
 * Writes tiny/{pretrain,tokenizer,tokenizer_config,special_tokens_map}.json,
 * llm_adapt/commonsense_170k/{train,validation,test}.json and the eight
 * llm_adapt/<set>/test.json files.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { dirname, join } from "@std/path";
import { generateSynthetic, SYNTHETIC_SEED } from "./synthetic.ts";

if (import.meta.main) {
  const args = parseArgs(Deno.args, { string: ["out", "seed"] });
  const out = args.out ?? join(dirname(dirname(new URL(import.meta.url).pathname)), "data_file");
  const seed = args.seed === undefined ? SYNTHETIC_SEED : Number(args.seed);
  if (!Number.isInteger(seed)) {
    console.error(`--seed: not an integer: ${args.seed}`);
    Deno.exit(2);
  }
  const { files, splits, pretrain } = generateSynthetic(seed);
  let total = 0;
  for (const [rel, text] of files) {
    const path = join(out, rel);
    await Deno.mkdir(dirname(path), { recursive: true });
    await Deno.writeTextFile(path, text);
    total += new TextEncoder().encode(text).length;
  }
  console.log(
    `wrote ${files.size} files (${(total / 1024).toFixed(0)} KiB) to ${out}: ` +
      `${pretrain.length} pre-training texts, ${splits.train.length} train, ` +
      `${splits.validation.length} validation questions`,
  );
}
