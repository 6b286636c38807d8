/**
 * Training without file I/O: the trainer (AdamW, schedule, clipping, accumulation), the loop,
 * the rules of data-parallel ranks (ranks.ts; MPI itself is in io/), datasets and their templates
 * and loss masks, your own data's formats, and the memory estimator. May import engine/, ops/ and
 * model/.
 * @module
 */
export * from "./trainer.ts";
export * from "./schedule.ts";
export * from "./prompt.ts";
export * from "./data.ts";
export * from "./memory.ts";
export * from "./loop.ts";
export * from "./datasets.ts";
export * from "./ranks.ts";
