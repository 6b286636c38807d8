/**
 * Fine-tunes a Llama-family model with HiRA, LoRA or full fine-tuning.
 *
 *   deno run -A train.ts --peft_type=hira [--model=DIR] [--dataset=common_170k] ...
 *
 * Flags follow the reference train_hira.py; `--help` lists them all.
 * @module
 */
import { parseTrainArgs, trainHelp } from "./lib/cli/flags.ts";
import { isHiraError } from "./lib/engine/errors.ts";
import { effectiveTrainArgs, interruptedExitCode, runTraining } from "./lib/cli/train.ts";
import { accuracyHooks } from "./lib/cli/eval.ts";

if (import.meta.main) {
  try {
    if (Deno.args.includes("--help") || Deno.args.includes("-h")) {
      console.log(trainHelp());
      Deno.exit(0);
    }
    const args = parseTrainArgs(Deno.args);
    const stopArg = Deno.env.get("HIRA_STOP_AFTER");
    // Tests only: a pause halfway through each checkpoint write, to kill the process there.
    const pauseArg = Deno.env.get("HIRA_CHECKPOINT_PAUSE_MS");
    // A resumed run's hooks follow its saved flags (--no-eval_accuracy, --eval_limit, ...).
    const runArgs = await effectiveTrainArgs(args);
    const result = await runTraining(args, {
      stopAfter: stopArg ? Number(stopArg) : undefined,
      checkpointPauseMs: pauseArg ? Number(pauseArg) : undefined,
      ...(runArgs.eval_accuracy ? accuracyHooks(runArgs) : {}),
    });
    // 128 + the signal's number (SIGINT 130, SIGTERM 143, SIGHUP 129), as a shell reports it.
    if (result.interrupted) Deno.exit(interruptedExitCode(result.signal));
  } catch (e) {
    if (isHiraError(e)) {
      console.error(`error: ${e.message}`);
      Deno.exit(2);
    }
    // The run stopped at a step (NaN/Inf, or the GPU was lost); its last checkpoint is kept.
    if (e instanceof Error && (e.name === "NonFiniteError" || e.name === "DeviceLostError")) {
      console.error(`error: ${e.message}`);
      Deno.exit(3);
    }
    throw e;
  }
}
