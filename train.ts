/**
 * Fine-tunes a Llama-family model with HiRA, LoRA or full fine-tuning.
 *
 *   deno run -A train.ts --peft_type=hira [--model=DIR] [--dataset=common_170k] ...
 *
 * Flags follow the reference train_hira.py; `--help` lists them all.
 * @module
 */
import { parseTrainArgs, trainHelp } from "./lib/cli/flags.ts";
import {
  effectiveTrainArgs,
  exitCodeOf,
  interruptedExitCode,
  runTraining,
} from "./lib/cli/train.ts";
import { accuracyHooks } from "./lib/cli/eval.ts";
import { localRank, type MpiWorld, openLaunchedWorld } from "./lib/io/mpi_deno.ts";
import { gpuPinningEnv, pciGpus } from "./lib/io/gpu_deno.ts";
import { RankError } from "./lib/train/ranks.ts";
import type { StepReport } from "./lib/train/trainer.ts";
import type { LlamaModel } from "./lib/model/model.ts";

/** A fault for tests: after step `step`, every adapter weight of this process becomes NaN. */
function poisonAfter(step: number) {
  return (r: StepReport, model: LlamaModel) => {
    if (r.step !== step) return;
    for (const p of model.trainable()) {
      model.gpu.write(p.param, new Float32Array(p.param.size).fill(NaN));
    }
  };
}

if (import.meta.main) {
  // Under mpirun/srun: this process is one rank (no MPI is loaded otherwise).
  let world: MpiWorld | null = null;
  const exit = (code: number): never => {
    world?.finalize();
    Deno.exit(code);
  };
  // Rank 0 alone reports an error every rank has.
  const report = (line: string) => {
    if ((world?.rank ?? 0) === 0) console.error(line);
  };
  try {
    if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
      console.log(trainHelp());
      Deno.exit(0);
    }
    const args = parseTrainArgs(Deno.args);
    world = openLaunchedWorld();
    if (world && !Deno.env.get("HIRA_LAUNCHER_PID")) {
      // Run directly (not through the launcher, which does this): one GPU per local rank.
      const pin = gpuPinningEnv(localRank(), pciGpus(), (k) => Deno.env.get(k));
      for (const [k, v] of Object.entries(pin)) Deno.env.set(k, v);
    }
    const stopArg = Deno.env.get("HIRA_STOP_AFTER");
    // Tests only: a pause halfway through each checkpoint write, to kill the process there.
    const pauseArg = Deno.env.get("HIRA_CHECKPOINT_PAUSE_MS");
    // Tests only: after this step, this process's adapters turn NaN (one rank's divergence).
    const nanArg = Deno.env.get("HIRA_TEST_NAN_AFTER_STEP");
    // A resumed run's hooks follow its saved flags (--no-eval_accuracy, --eval_limit, ...).
    const runArgs = await effectiveTrainArgs(args);
    const result = await runTraining(args, {
      stopAfter: stopArg ? Number(stopArg) : undefined,
      checkpointPauseMs: pauseArg ? Number(pauseArg) : undefined,
      ...(runArgs.eval_accuracy ? accuracyHooks(runArgs) : {}),
      world: world ?? undefined,
      ...(nanArg ? { afterStep: poisonAfter(Number(nanArg)) } : {}),
    });
    // 128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129), as a shell reports it.
    if (result.interrupted) exit(interruptedExitCode(result.signal));
    exit(0);
  } catch (e) {
    // 2: bad input; 3: the run stopped at a step (NaN/Inf, or the GPU was lost), its last
    // checkpoint kept; the same status on every rank.
    const code = exitCodeOf(e);
    if (code !== 1 || e instanceof RankError) {
      report(`error: ${(e as Error).message}`);
      exit(code);
    }
    if (world) {
      report(`error: ${(e as Error)?.stack ?? e}`);
      exit(1);
    }
    throw e;
  }
}
