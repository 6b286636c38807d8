import { assertAlmostEquals, assertEquals } from "@std/assert";
import { linearWarmupDecay, totalSteps } from "../../lib/train/schedule.ts";

Deno.test("linear schedule: warmup from 0, peak at warmup, 0 at the end", () => {
  assertEquals(linearWarmupDecay(0, 1e-3, 10, 110), 0);
  assertAlmostEquals(linearWarmupDecay(5, 1e-3, 10, 110), 5e-4, 1e-12);
  assertAlmostEquals(linearWarmupDecay(10, 1e-3, 10, 110), 1e-3, 1e-12);
  assertAlmostEquals(linearWarmupDecay(60, 1e-3, 10, 110), 5e-4, 1e-12);
  assertEquals(linearWarmupDecay(110, 1e-3, 10, 110), 0);
  assertAlmostEquals(linearWarmupDecay(0, 2e-3, 0, 4), 2e-3, 1e-12);
});

Deno.test("total steps follow HF Trainer's count (reference example: 170,300 at batch 16, 3 epochs)", () => {
  assertEquals(totalSteps(170300, 16, 1, 1), 10644);
  assertEquals(totalSteps(170300, 16, 1, 3), 31932);
  assertEquals(totalSteps(10, 4, 2, 1), 1);
  assertEquals(totalSteps(3, 32, 4, 1), 1);
  assertEquals(totalSteps(100, 10, 1, 0.5), 5);
});
