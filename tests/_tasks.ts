/**
 * deno.json's tasks as a test starts them: the permissions a task grants are stated once, in
 * deno.json, and tests that run a task as a user would read them from there.
 * @module
 */
import { join } from "@std/path";
import { REPO_ROOT } from "../lib/cli/launch.ts";

/**
 * The arguments after `deno` of deno.json's task `name` (for `train`: "run --allow-read
 * --allow-env=… --allow-run=deno scripts/launch.ts train"), with its script paths made absolute
 * so that the command runs from any folder.
 */
export function taskArgs(name: string): string[] {
  const tasks = JSON.parse(Deno.readTextFileSync(join(REPO_ROOT, "deno.json"))).tasks;
  if (typeof tasks?.[name] !== "string") throw new Error(`deno.json has no task ${name}`);
  const words = tasks[name].trim().split(/\s+/);
  if (words[0] !== "deno") throw new Error(`deno.json's task ${name} does not start with deno`);
  return words.slice(1).map((w: string) => w.endsWith(".ts") ? join(REPO_ROOT, w) : w);
}
