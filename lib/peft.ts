/**
 * PEFT's adapter folder layout, shared by every method (one layout for all, as in Hugging Face
 * PEFT): `adapter_config.json` + `adapter_model.safetensors`.
 *
 * - HiRA: keys `base_model.model.<module>.hira_A` [r, in] and `.hira_B` [out, r], peft_type
 *   "HIRA" (PEFT's `HiraConfig`). The reference repo's names `.lora_A` / `.lora_B` (no
 *   ".weight") with its "LORA"+"r_ab" config are accepted on load.
 * - LoRA: keys `.lora_A.weight` / `.lora_B.weight`, peft_type "LORA", scale lora_alpha / r.
 *
 * Target matching follows PEFT for lists: a module matches when its path equals an entry or ends
 * with "." + entry. Entries are trimmed (the reference's default `'q_proj, v_proj'` silently
 * adapted only q_proj because of the space), and an entry that matches nothing is an error.
 * @module
 */
import { HiraError, preview } from "./errors.ts";
import {
  type LlamaConfig,
  modulePath,
  type Projection,
  PROJECTIONS,
  projectionShape,
} from "./config.ts";

/** Adapter methods this project trains and reads. */
export type PeftType = "HIRA" | "LORA";

/** A parsed adapter config. */
export interface AdapterConfig {
  peftType: PeftType;
  r: number;
  targetModules: string[];
  /** LoRA only: scale is loraAlpha / r. */
  loraAlpha: number;
  loraDropout: number;
  baseModel: string;
  /** Key naming used in the weights file. */
  keyStyle: "peft" | "reference";
}

/**
 * The adapter config a run writes (PEFT key style): the CLI (lib/train_deno.ts) and the page
 * (web/session.ts) both build theirs here.
 */
export function runAdapterConfig(
  method: "hira" | "lora",
  r: number,
  targetModules: readonly string[],
  lora: { alpha: number; dropout: number },
  baseModel: string,
): AdapterConfig {
  return {
    peftType: method === "hira" ? "HIRA" : "LORA",
    r,
    targetModules: [...targetModules],
    loraAlpha: lora.alpha,
    loraDropout: lora.dropout,
    baseModel,
    keyStyle: "peft",
  };
}

/** Splits a --target_modules value: comma list, spaces trimmed, empties dropped. */
export function parseTargetList(s: string | readonly string[]): string[] {
  const list = typeof s === "string" ? s.split(",") : [...s];
  return list.map((x) => x.trim()).filter((x) => x.length > 0);
}

/**
 * Module paths (e.g. "model.layers.0.self_attn.q_proj") adapted by `targets`, in layer order.
 * Throws a HiraError naming `source` when a target matches no projection.
 */
export function matchTargets(
  cfg: LlamaConfig,
  targets: readonly string[],
  source = "--target_modules",
): { path: string; layer: number; proj: Projection }[] {
  if (targets.length === 0) throw new HiraError(source, "no target modules given");
  const all: { path: string; layer: number; proj: Projection }[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const p of PROJECTIONS) all.push({ path: modulePath(l, p), layer: l, proj: p });
  }
  const hit = (path: string, t: string) => path === t || path.endsWith("." + t);
  for (const t of targets) {
    if (t === "all-linear") continue;
    if (!all.some((m) => hit(m.path, t))) {
      throw new HiraError(
        source,
        `target module '${t}' matches no linear layer of the model ` +
          `(names: ${PROJECTIONS.join(", ")})`,
      );
    }
  }
  if (targets.includes("all-linear")) return all;
  return all.filter((m) => targets.some((t) => hit(m.path, t)));
}

/**
 * Refuses a rank larger than a matched layer: B·A of an [out, in] layer has rank at most
 * min(out, in), so the extra rows and columns only cost memory and time (LoRA and HiRA alike).
 * Throws a HiraError naming `source` and the first layer that is too small.
 */
export function checkRank(
  cfg: LlamaConfig,
  modules: readonly { path: string; proj: Projection }[],
  r: number,
  source = "--r_ab",
): void {
  for (const m of modules) {
    const [o, i] = projectionShape(cfg, m.proj);
    if (r > Math.min(o, i)) {
      throw new HiraError(
        source,
        `${r} is larger than ${m.path} [${o} × ${i}] (a rank is at most min(out, in) = ` +
          `${Math.min(o, i)})`,
      );
    }
  }
}

/** The file key of one adapter tensor. */
export function adapterKey(
  path: string,
  type: PeftType,
  which: "A" | "B",
  style: "peft" | "reference" = "peft",
): string {
  if (type === "HIRA") {
    return `base_model.model.${path}.${style === "reference" ? "lora" : "hira"}_${which}`;
  }
  return `base_model.model.${path}.lora_${which}.weight`;
}

/** adapter_config.json contents in PEFT's layout (sorted keys, like `save_pretrained`). */
export function adapterConfigJson(c: AdapterConfig): string {
  const common = {
    base_model_name_or_path: c.baseModel,
    bias: "none",
    fan_in_fan_out: false,
    inference_mode: true,
    modules_to_save: null,
    peft_type: c.peftType,
    r: c.r,
    target_modules: c.targetModules,
    task_type: "CAUSAL_LM",
  };
  const specific = c.peftType === "HIRA" ? { hira_dropout: 0.0, init_weights: true } : {
    lora_alpha: c.loraAlpha,
    lora_dropout: c.loraDropout,
    use_rslora: false,
    init_lora_weights: true,
  };
  const all: Record<string, unknown> = { ...common, ...specific };
  const sorted = Object.fromEntries(Object.keys(all).sort().map((k) => [k, all[k]]));
  return JSON.stringify(sorted, null, 2) + "\n";
}

/** Parses adapter_config.json (PEFT HIRA/LORA, or the reference repo's LORA+r_ab HiRA). */
export function parseAdapterConfig(json: unknown, file = "adapter_config.json"): AdapterConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new HiraError(file, "is not a JSON object");
  }
  const c = json as Record<string, unknown>;
  const type = c.peft_type;
  // The reference repo saves HiRA as peft_type "LORA" with an r_ab field.
  const reference = type === "LORA" && typeof c.r_ab === "number";
  if (type !== "HIRA" && type !== "LORA") {
    throw new HiraError(file, `peft_type ${preview(type)} is not supported (HIRA or LORA)`);
  }
  const r = reference ? c.r_ab : c.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0) {
    throw new HiraError(file, `r must be a positive integer, got ${preview(r)}`);
  }
  const tm = c.target_modules;
  let targetModules: string[];
  if (typeof tm === "string") targetModules = parseTargetList(tm);
  else if (Array.isArray(tm) && tm.every((x) => typeof x === "string")) {
    targetModules = parseTargetList(tm);
  } else throw new HiraError(file, "target_modules must be a list of module names");
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== "number") throw new HiraError(file, "lora_alpha must be a number");
  return {
    peftType: reference ? "HIRA" : type,
    r,
    targetModules,
    loraAlpha: alpha,
    loraDropout: typeof c.lora_dropout === "number" ? c.lora_dropout : 0,
    baseModel: typeof c.base_model_name_or_path === "string" ? c.base_model_name_or_path : "",
    keyStyle: reference ? "reference" : "peft",
  };
}

/**
 * Checks a weights file's keys against the model and config: every expected key present with
 * its shape, nothing extra. Returns the key style found ("peft" or "reference" for HiRA).
 * Unlike the reference's `strict=False`, a mismatch is an error naming the first bad key.
 */
export function checkAdapterKeys(
  cfg: LlamaConfig,
  ac: AdapterConfig,
  shapes: Map<string, readonly number[]>,
  file: string,
): "peft" | "reference" {
  const modules = matchTargets(cfg, ac.targetModules, file);
  let style: "peft" | "reference" = ac.keyStyle;
  if (ac.peftType === "HIRA" && modules.length > 0) {
    const first = adapterKey(modules[0].path, "HIRA", "A", "peft");
    const ref = adapterKey(modules[0].path, "HIRA", "A", "reference");
    if (!shapes.has(first) && shapes.has(ref)) style = "reference";
    else if (shapes.has(first)) style = "peft";
  }
  const expected = new Set<string>();
  for (const m of modules) {
    const [o, i] = projectionShape(cfg, m.proj);
    for (const which of ["A", "B"] as const) {
      const key = adapterKey(m.path, ac.peftType, which, style);
      expected.add(key);
      const s = shapes.get(key);
      const want = which === "A" ? [ac.r, i] : [o, ac.r];
      if (!s) throw new HiraError(file, `missing adapter tensor ${key}`);
      if (s.length !== 2 || s[0] !== want[0] || s[1] !== want[1]) {
        throw new HiraError(
          file,
          `adapter tensor ${key} has shape [${s}], the model needs [${want}]`,
        );
      }
    }
  }
  for (const k of shapes.keys()) {
    if (!expected.has(k)) {
      throw new HiraError(
        file,
        `unexpected tensor ${k}: it does not belong to the adapted modules`,
      );
    }
  }
  return style;
}

/**
 * Trainable parameter count and share, as the reference prints it:
 * trainable / (base + trainable).
 */
export function trainableShare(trainable: number, base: number): string {
  return `trainable params: ${trainable.toLocaleString("en-US")} || all params: ${
    (base + trainable).toLocaleString("en-US")
  } || trainable%: ${(100 * trainable / (base + trainable)).toFixed(4)}`;
}
