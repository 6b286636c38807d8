/**
 * Browser-side file access for the engine: {@linkcode ByteSource}s over `Blob`/`File` objects
 * and URLs, and readers that turn a Hugging Face model folder or a PEFT adapter folder (served
 * over HTTP, or picked/dropped by the user as `File` objects) into what lib/model/load.ts,
 * lib/model/attach.ts and lib/model/tokenizer.ts take. The web page's counterpart of model_deno.ts,
 * peft_deno.ts and tokenizer_deno.ts, with the same validation and error messages where the
 * cases exist in both.
 *
 * Uses no `Deno.*` API: `Blob`, `File` and `fetch` exist in browsers and in Deno alike, so this
 * module is tested under Deno too.
 * @module
 */
import { HiraError, parseJson } from "../engine/errors.ts";
import { type LlamaConfig, parseConfig } from "../model/config.ts";
import { type AdapterConfig, adapterConfigJson, parseAdapterConfig } from "../model/peft.ts";
import {
  type ByteSource,
  bytesSource,
  concatBytes,
  encodeSafetensors,
  loadShardedWeights,
  parseShardIndex,
  readHeader,
  type TensorToWrite,
  WeightSet,
} from "../model/safetensors.ts";
import type { TokenizerFiles } from "../model/tokenizer.ts";

/**
 * A {@linkcode ByteSource} over a `Blob` (a `File` from a file input or a drop): each read
 * slices the blob, so only the header and one tensor at a time are ever in memory.
 */
export function blobSource(blob: Blob, name: string): ByteSource {
  return {
    name,
    size: blob.size,
    async read(offset: number, length: number): Promise<Uint8Array> {
      if (offset < 0 || length < 0 || offset + length > blob.size) {
        throw new HiraError(
          name,
          `read of ${length} bytes at offset ${offset} is past the end (${blob.size} bytes)`,
        );
      }
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}

/**
 * A set of files addressed by path relative to a folder: a model or adapter folder served over
 * HTTP ({@linkcode urlFolder}) or picked by the user ({@linkcode fileFolder}).
 */
export interface FolderSource {
  /** The folder's name for messages and for adapter_config.json's base_model_name_or_path. */
  readonly name: string;
  /** Whether a file exists. */
  has(path: string): Promise<boolean>;
  /** A file's text, or null when it does not exist. */
  text(path: string): Promise<string | null>;
  /** Random access to a file's bytes, or null when it does not exist. */
  bytes(path: string): Promise<ByteSource | null>;
}

/**
 * A folder served over HTTP under `base` (which should end with "/"). A 404 means "no such
 * file"; any other failure is an error naming the URL. Binary files are fetched whole (the
 * served model is the small embedded one; big local models go through {@linkcode fileFolder}).
 */
export function urlFolder(base: URL, name = base.pathname): FolderSource {
  const url = (path: string) => new URL(path, base);
  const get = async (path: string): Promise<Response | null> => {
    let r: Response;
    try {
      r = await fetch(url(path));
    } catch (e) {
      throw new HiraError(url(path).href, `cannot be fetched (${(e as Error).message})`);
    }
    if (r.status === 404) {
      await r.body?.cancel();
      return null;
    }
    if (!r.ok) {
      await r.body?.cancel();
      throw new HiraError(url(path).href, `HTTP ${r.status} ${r.statusText}`);
    }
    return r;
  };
  return {
    name,
    async has(path) {
      const r = await get(path);
      await r?.body?.cancel();
      return r !== null;
    },
    async text(path) {
      const r = await get(path);
      return r ? await r.text() : null;
    },
    async bytes(path) {
      const r = await get(path);
      return r ? bytesSource(new Uint8Array(await r.arrayBuffer()), url(path).href) : null;
    },
  };
}

/** A picked or dropped file with its path inside the chosen folder. */
export interface FolderEntry {
  /** Path with "/" separators, e.g. "my-model/config.json" or "config.json". */
  path: string;
  file: Blob;
}

/**
 * A folder made of `File` objects, as `<input type="file" webkitdirectory>` (each file's
 * `webkitRelativePath`) or a drag-and-drop walk gives them. When every path starts with the
 * same top folder ("my-model/..."), that folder is the root and its name the folder's name.
 */
export function fileFolder(entries: readonly FolderEntry[], fallbackName = "folder"): FolderSource {
  const paths = entries.map((e) => e.path.replace(/^\/+/, ""));
  const tops = new Set(paths.map((p) => (p.includes("/") ? p.split("/")[0] : "")));
  const top = tops.size === 1 && !tops.has("") ? [...tops][0] : "";
  const files = new Map<string, Blob>();
  entries.forEach((e, i) => files.set(top ? paths[i].slice(top.length + 1) : paths[i], e.file));
  const name = top || fallbackName;
  return {
    name,
    has: (path) => Promise.resolve(files.has(path)),
    async text(path) {
      const f = files.get(path);
      return f ? await f.text() : null;
    },
    bytes(path) {
      const f = files.get(path);
      return Promise.resolve(f ? blobSource(f, `${name}/${path}`) : null);
    },
  };
}

/** The entries of a `FileList` from `<input type="file" webkitdirectory>` (or plain files). */
export function entriesOfFileList(files: Iterable<File>): FolderEntry[] {
  return [...files].map((f) => ({
    path: (f as File & { webkitRelativePath?: string }).webkitRelativePath || f.name,
    file: f,
  }));
}

/** What a model folder provides for {@linkcode loadModel} and the tokenizer. */
export interface ModelFolderContents {
  config: LlamaConfig;
  weights: WeightSet;
  tokenizer: TokenizerFiles;
}

/**
 * Reads a Hugging Face model folder: config.json (validated), model.safetensors or the shards
 * of model.safetensors.index.json (every header validated), and tokenizer.json with the
 * optional tokenizer_config.json and special_tokens_map.json. Missing pieces are a
 * {@linkcode HiraError} naming the file, as the Deno loaders do.
 */
export async function readModelFolder(folder: FolderSource): Promise<ModelFolderContents> {
  const at = (p: string) => `${folder.name}/${p}`;
  const cfgText = await folder.text("config.json");
  if (cfgText === null) {
    throw new HiraError(at("config.json"), "missing: a model folder needs config.json");
  }
  const config = parseConfig(parseJson(cfgText, at("config.json")), at("config.json"));

  let weights: WeightSet;
  const single = await folder.bytes("model.safetensors");
  if (single) {
    const header = await readHeader(single);
    const entries = new Map(
      [...header.tensors].map(([n, info]) => [n, { source: single, info }]),
    );
    weights = new WeightSet(single.name, entries, header.metadata);
  } else {
    const indexText = await folder.text("model.safetensors.index.json");
    if (indexText === null) {
      const bin = await folder.has("pytorch_model.bin");
      throw new HiraError(
        folder.name,
        "no model.safetensors or model.safetensors.index.json" +
          (bin ? " (only PyTorch .bin weights: convert them to safetensors first)" : ""),
      );
    }
    const indexFile = at("model.safetensors.index.json");
    const index = parseShardIndex(indexText, indexFile);
    weights = await loadShardedWeights(indexFile, index, async (shard) => {
      const src = await folder.bytes(shard);
      if (!src) throw new HiraError(at(shard), `shard listed in ${indexFile} is missing`);
      return src;
    });
  }

  const tokText = await folder.text("tokenizer.json");
  if (tokText === null) {
    throw new HiraError(
      at("tokenizer.json"),
      "file not found (a tokenizer folder needs tokenizer.json)",
    );
  }
  const optional = async (p: string) => {
    const t = await folder.text(p);
    return t === null ? undefined : parseJson(t, at(p));
  };
  return {
    config,
    weights,
    tokenizer: {
      tokenizer: parseJson(tokText, at("tokenizer.json")),
      config: await optional("tokenizer_config.json"),
      specialTokensMap: await optional("special_tokens_map.json"),
      source: at("tokenizer.json"),
    },
  };
}

/** A PEFT adapter folder's parsed config and tensors. */
export interface AdapterFolderContents {
  config: AdapterConfig;
  weights: WeightSet;
}

/**
 * Reads a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), both
 * validated; pass the result to lib/model/attach.ts `loadAdapters`, which checks every key strictly.
 */
export async function readAdapterFolder(folder: FolderSource): Promise<AdapterFolderContents> {
  const cfgFile = `${folder.name}/adapter_config.json`;
  const text = await folder.text("adapter_config.json");
  if (text === null) throw new HiraError(cfgFile, "missing (not an adapter folder)");
  const config = parseAdapterConfig(parseJson(text, cfgFile), cfgFile);
  const src = await folder.bytes("adapter_model.safetensors");
  if (!src) {
    const bin = await folder.has("adapter_model.bin");
    throw new HiraError(
      `${folder.name}/adapter_model.safetensors`,
      bin
        ? "missing; only adapter_model.bin (a torch pickle) is there: convert it to safetensors"
        : "missing",
    );
  }
  const header = await readHeader(src);
  const entries = new Map([...header.tensors].map(([n, info]) => [n, { source: src, info }]));
  return { config, weights: new WeightSet(src.name, entries, header.metadata) };
}

/** The two files of a PEFT adapter folder, ready to download or write. */
export interface AdapterFileBytes {
  /** adapter_config.json text (PEFT's layout, as `deno task train` writes it). */
  configJson: string;
  /** adapter_model.safetensors bytes (metadata {"format": "pt"}, as the Deno writer). */
  safetensors: Uint8Array<ArrayBuffer>;
}

/** Encodes an adapter as the files of a PEFT folder, byte-compatible with peft_deno.ts's. */
export function adapterFileBytes(
  config: AdapterConfig,
  tensors: readonly TensorToWrite[],
): AdapterFileBytes {
  return {
    configJson: adapterConfigJson(config),
    safetensors: concatBytes(encodeSafetensors(tensors, { format: "pt" })),
  };
}
