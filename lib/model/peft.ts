/**
 * PEFT's adapter folder layout, shared by every method (one layout for all, as in Hugging Face
 * PEFT): `adapter_config.json` + `adapter_model.safetensors`.
 *
 * - HiRA: keys `base_model.model.<module>.hira_A` [r, in] and `.hira_B` [out, r], peft_type
 *   "HIRA" (PEFT's `HiraConfig`). The reference repo's names `.lora_A` / `.lora_B` (no
 *   ".weight") with its "LORA"+"r_ab" config are accepted on load.
 * - LoRA: keys `.lora_A.weight` / `.lora_B.weight`, peft_type "LORA", scale lora_alpha / r
 *   (lora_alpha / √r with `use_rslora`), with PEFT's per-module `rank_pattern` and
 *   `alpha_pattern` (HiRA has `rank_pattern` too).
 *
 * Target matching follows PEFT: a list matches a module when its path equals an entry or ends
 * with "." + entry; a string is a regular expression that must match the whole module path.
 * List entries are trimmed (the reference's default `'q_proj, v_proj'` silently adapted only
 * q_proj because of the space), and an entry that matches nothing is an error. PEFT options
 * that change the math and are not implemented are refused by name rather than ignored.
 * @module
 */
import { HiraError, preview } from "../engine/errors.ts";
import type { LlamaConfig, Projection } from "./config.ts";
import { modulePath, PROJECTIONS, projectionShape } from "./config.ts";

/** Adapter methods this project trains and reads. */
export type PeftType = "HIRA" | "LORA";

/**
 * Which modules an adapter covers, as PEFT's `target_modules`: a list of names (exact paths or
 * "." + suffix, "all-linear" for every projection) or one regular expression matched against
 * the whole module path.
 */
export type TargetModules = string[] | string;

/** A parsed adapter config. */
export interface AdapterConfig {
  peftType: PeftType;
  /** The default rank; {@linkcode moduleRank} applies `rankPattern`. */
  r: number;
  targetModules: TargetModules;
  /** LoRA only: scale is loraAlpha / r (see {@linkcode loraScale}). */
  loraAlpha: number;
  loraDropout: number;
  baseModel: string;
  /** Key naming used in the weights file. */
  keyStyle: "peft" | "reference";
  /** LoRA only: scale α/√r instead of α/r (PEFT's use_rslora). */
  useRslora?: boolean;
  /** Per-module ranks: PEFT's rank_pattern (key: a module name or a regex of its tail). */
  rankPattern?: Record<string, number>;
  /** LoRA only: per-module α, PEFT's alpha_pattern. */
  alphaPattern?: Record<string, number>;
}

/**
 * The adapter config a run writes (PEFT key style): the CLI (lib/cli/train.ts) and the page
 * (web/session.ts) both build theirs here.
 */
export function runAdapterConfig(
  method: "hira" | "lora",
  r: number,
  targetModules: Readonly<TargetModules>,
  lora: { alpha: number; dropout: number; useRslora?: boolean },
  baseModel: string,
): AdapterConfig {
  return {
    peftType: method === "hira" ? "HIRA" : "LORA",
    r,
    targetModules: typeof targetModules === "string" ? targetModules : [...targetModules],
    loraAlpha: lora.alpha,
    loraDropout: lora.dropout,
    baseModel,
    keyStyle: "peft",
    useRslora: method === "lora" && lora.useRslora === true,
  };
}

/** Splits a --target_modules value: comma list, spaces trimmed, empties dropped. */
export function parseTargetList(s: string | readonly string[]): string[] {
  const list = typeof s === "string" ? s.split(",") : [...s];
  return list.map((x) => x.trim()).filter((x) => x.length > 0);
}

/**
 * A --target_modules value: a regular expression (PEFT's string form, matched against the whole
 * module path) when it holds a regex metacharacter, else a comma list. Module names never hold
 * one, so the two cannot be confused.
 */
export function parseTargetFlag(s: string): TargetModules {
  return /[*+?()[\]{}|\\^$]/.test(s) ? s.trim() : parseTargetList(s);
}

/** A target list or regex as text, for logs and run-folder names. */
export function targetText(t: Readonly<TargetModules>): string {
  return typeof t === "string" ? t : t.join(",");
}

/**
 * A Python `re` pattern as a JavaScript RegExp anchored as `re.fullmatch` (`anchor` "full") or
 * as PEFT's `get_pattern_key` (`(.*\.)?(key)$` from the start). Python's named-group syntax is
 * translated; anything else JavaScript cannot read is an error naming `source`.
 */
export function pythonRegex(p: string, anchor: "full" | "tail", source: string): RegExp {
  const js = p.replace(/\(\?P</g, "(?<").replace(/\(\?P=(\w+)\)/g, "\\k<$1>");
  try {
    return new RegExp(anchor === "full" ? `^(?:${js})$` : `^(.*\\.)?(${js})$`);
  } catch {
    throw new HiraError(source, `${preview(p)} is not a regular expression this project can read`);
  }
}

/**
 * PEFT's `get_pattern_key`: the first key of `pattern` (in file order) whose regex matches the
 * end of `path` at a "." boundary, or null.
 */
export function patternKey(
  pattern: Record<string, number> | undefined,
  path: string,
  source = "adapter_config.json",
): string | null {
  for (const key of Object.keys(pattern ?? {})) {
    if (pythonRegex(key, "tail", source).test(path)) return key;
  }
  return null;
}

/**
 * The rank of module `path`: its rank_pattern entry, else r. HiRA keeps r everywhere: PEFT 0.21
 * reads HiraConfig.rank_pattern but its layer factory (`dispatch_default`) builds every layer
 * with `hira_config.r`, so PEFT's own HiRA files have rank r throughout and load that way
 * (tests/fixtures/golden/adapter-hira-rank shows it); the pattern is kept and written back.
 */
export function moduleRank(ac: AdapterConfig, path: string): number {
  if (ac.peftType === "HIRA") return ac.r;
  const k = patternKey(ac.rankPattern, path);
  return k === null ? ac.r : ac.rankPattern![k];
}

/** LoRA's α of module `path`: its alpha_pattern entry, else lora_alpha. */
export function moduleAlpha(ac: AdapterConfig, path: string): number {
  const k = patternKey(ac.alphaPattern, path);
  return k === null ? ac.loraAlpha : ac.alphaPattern![k];
}

/** LoRA's scale of module `path` as PEFT computes it: α/r, or α/√r with use_rslora. */
export function loraScale(ac: AdapterConfig, path: string): number {
  const r = moduleRank(ac, path), alpha = moduleAlpha(ac, path);
  return ac.useRslora ? alpha / Math.sqrt(r) : alpha / r;
}

/**
 * Module paths (e.g. "model.layers.0.self_attn.q_proj") adapted by `targets`, in layer order.
 * Throws a HiraError naming `source` when a target matches no projection.
 */
export function matchTargets(
  cfg: LlamaConfig,
  targets: Readonly<TargetModules>,
  source = "--target_modules",
): { path: string; layer: number; proj: Projection }[] {
  if (targets.length === 0) throw new HiraError(source, "no target modules given");
  const all: { path: string; layer: number; proj: Projection }[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const p of PROJECTIONS) all.push({ path: modulePath(l, p), layer: l, proj: p });
  }
  if (typeof targets === "string") {
    const re = pythonRegex(targets, "full", source);
    // PEFT would adapt these too; this engine adapts only the seven projections.
    for (const other of ["lm_head", "model.embed_tokens"]) {
      if (re.test(other)) {
        throw new HiraError(
          source,
          `target_modules regex matches ${other}, which is not supported`,
        );
      }
    }
    const hits = all.filter((m) => re.test(m.path));
    if (hits.length === 0) {
      throw new HiraError(
        source,
        `target_modules regex ${preview(targets)} matches no linear layer of the model ` +
          `(paths look like ${all[0]?.path ?? "model.layers.0.self_attn.q_proj"})`,
      );
    }
    return hits;
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

/**
 * adapter_config.json contents in PEFT's layout (sorted keys, like `save_pretrained`). Every key
 * is a field of PEFT's HiraConfig or LoraConfig (tests/peft_test.ts checks them against the
 * installed PEFT's fields), so `PeftModel.from_pretrained` loads it without a warning; the
 * fields that select options this project does not implement are written with their defaults.
 */
export function adapterConfigJson(c: AdapterConfig): string {
  const common = {
    auto_mapping: null,
    base_model_name_or_path: c.baseModel,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    layers_pattern: null,
    layers_to_transform: null,
    modules_to_save: null,
    peft_type: c.peftType,
    r: c.r,
    rank_pattern: c.rankPattern ?? {},
    revision: null,
    target_modules: c.targetModules,
    task_type: "CAUSAL_LM",
  };
  const specific = c.peftType === "HIRA" ? { hira_dropout: 0.0, init_weights: true } : {
    alpha_pattern: c.alphaPattern ?? {},
    bias: "none",
    init_lora_weights: true,
    lora_alpha: c.loraAlpha,
    lora_bias: false,
    lora_dropout: c.loraDropout,
    use_dora: false,
    use_rslora: c.useRslora === true,
  };
  const all: Record<string, unknown> = { ...common, ...specific };
  const sorted = Object.fromEntries(Object.keys(all).sort().map((k) => [k, all[k]]));
  return JSON.stringify(sorted, null, 2) + "\n";
}

/**
 * PEFT fields that change what an adapter computes and that this project does not implement,
 * with the value that means "off": a config that sets one otherwise is refused by name.
 */
const UNSUPPORTED: Record<PeftType, Record<string, (v: unknown) => boolean>> = {
  LORA: {
    use_dora: (v) => v === false,
    lora_bias: (v) => v === false,
    bias: (v) => v === "none",
    fan_in_fan_out: (v) => v === false,
    modules_to_save: empty,
    exclude_modules: empty,
    layers_to_transform: empty,
    layers_pattern: empty,
    layer_replication: empty,
    target_parameters: empty,
    trainable_token_indices: empty,
    alora_invocation_tokens: empty,
    use_qalora: (v) => v === false,
    use_bdlora: (v) => v === false || v === null,
    arrow_config: empty,
    kasa_config: empty,
    monteclora_config: empty,
    velora_config: empty,
    // These initialisations rewrite the base weights, which a saved adapter then depends on.
    init_lora_weights: (v) =>
      v === true || v === false || v === "gaussian" || v === "eva" || v === "orthogonal",
  },
  HIRA: {
    fan_in_fan_out: (v) => v === false,
    modules_to_save: empty,
    exclude_modules: empty,
    layers_to_transform: empty,
    layers_pattern: empty,
  },
};

function empty(v: unknown): boolean {
  if (v === null || v === false || v === "") return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === "object") return Object.keys(v as object).length === 0;
  return false;
}

function patternField(
  c: Record<string, unknown>,
  key: string,
  file: string,
  integer: boolean,
): Record<string, number> | undefined {
  const v = c[key];
  if (v == null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new HiraError(file, `${key} must be an object of module name to number`);
  }
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (
      typeof x !== "number" || !(x > 0) || !Number.isFinite(x) || (integer && !Number.isInteger(x))
    ) {
      throw new HiraError(
        file,
        `${key}.${k} must be a positive ${integer ? "integer" : "number"}, got ${preview(x)}`,
      );
    }
    pythonRegex(k, "tail", `${file}: ${key}`);
    out[k] = x;
  }
  return Object.keys(out).length ? out : undefined;
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
  const peftType: PeftType = reference ? "HIRA" : type;
  const r = reference ? c.r_ab : c.r;
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0) {
    throw new HiraError(file, `r must be a positive integer, got ${preview(r)}`);
  }
  if (!reference) {
    for (const [field, ok] of Object.entries(UNSUPPORTED[peftType])) {
      if (field in c && !ok(c[field])) {
        throw new HiraError(
          file,
          `${field} ${preview(c[field])} is not supported (this project implements ` +
            `${peftType === "HIRA" ? "HiRA" : "LoRA"} without it)`,
        );
      }
    }
  }
  const tm = c.target_modules;
  let targetModules: TargetModules;
  // PEFT's rule: a string is one regular expression over the whole module path.
  if (typeof tm === "string") {
    pythonRegex(tm, "full", `${file}: target_modules`);
    targetModules = tm;
  } else if (Array.isArray(tm) && tm.every((x) => typeof x === "string")) {
    targetModules = parseTargetList(tm);
  } else throw new HiraError(file, "target_modules must be a list of module names or a regex");
  const alpha = c.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !Number.isFinite(alpha)) {
    throw new HiraError(file, "lora_alpha must be a finite number");
  }
  if (c.use_rslora != null && typeof c.use_rslora !== "boolean") {
    throw new HiraError(file, `use_rslora must be true or false, got ${preview(c.use_rslora)}`);
  }
  return {
    peftType,
    r,
    targetModules,
    loraAlpha: alpha,
    loraDropout: typeof c.lora_dropout === "number" ? c.lora_dropout : 0,
    baseModel: typeof c.base_model_name_or_path === "string" ? c.base_model_name_or_path : "",
    keyStyle: reference ? "reference" : "peft",
    useRslora: peftType === "LORA" && c.use_rslora === true,
    rankPattern: reference ? undefined : patternField(c, "rank_pattern", file, true),
    alphaPattern: peftType === "LORA" ? patternField(c, "alpha_pattern", file, false) : undefined,
  };
}

/** The adapter_config.json beside an adapter_model.safetensors path (else the path itself). */
export function adapterConfigFileOf(weightsFile: string): string {
  return weightsFile.replace(/adapter_model\.safetensors$/, "adapter_config.json");
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
  // Which modules are adapted is the config's say: a target that matches nothing names it.
  const modules = matchTargets(cfg, ac.targetModules, adapterConfigFileOf(file));
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
      const r = moduleRank(ac, m.path);
      const want = which === "A" ? [r, i] : [o, r];
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
