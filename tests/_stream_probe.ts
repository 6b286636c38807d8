/**
 * Subprocess of tests/train/dataset_file_test.ts: streams every record of the dataset file given as
 * the first argument and prints the record count and the process's resident memory (RSS)
 * before and at its peak and the peak V8 heap in use (sampled every 1,000 records), as JSON.
 * @module
 */
import { fileRecords } from "../lib/io/dataset_file_deno.ts";

const file = Deno.args[0];
const baseline = Deno.memoryUsage().rss;
let peak = baseline;
let heapPeak = 0;
let count = 0;
let chars = 0;
for await (const r of fileRecords(file, null)) {
  count++;
  if (r.format === "alpaca") chars += r.output.length;
  if (count % 1000 === 0) {
    const m = Deno.memoryUsage();
    peak = Math.max(peak, m.rss);
    heapPeak = Math.max(heapPeak, m.heapUsed);
  }
}
peak = Math.max(peak, Deno.memoryUsage().rss);
const bytes = (await Deno.stat(file)).size;
console.log(JSON.stringify({ count, chars, baseline, peak, heapPeak, bytes }));
