/**
 * The command-line programs behind train.ts and eval.ts: flags, the training and evaluation
 * programs, run folders, the dry-run report and the permission-scoped launcher. The top layer.
 *
 * Not re-exported by the root mod.ts: import the modules you need directly.
 * @module
 */
export * from "./flags.ts";
export * from "./dry_run.ts";
export * from "./eval.ts";
export * from "./eval_file.ts";
export * from "./launch.ts";
export * from "./permissions.ts";
export * from "./run_folder.ts";
export * from "./train.ts";
