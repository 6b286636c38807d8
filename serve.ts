/**
 * `deno task serve [--port=8787]`: serves the web page (web/index.html) that fine-tunes a model
 * with HiRA or LoRA on the browser's WebGPU, on 127.0.0.1 only.
 *
 * The page's script is web/app.ts bundled at start-up with Deno's own bundler (`Deno.bundle`,
 * behind `--unstable-bundle`), so there is no build step; kernels/ and data_file/ are served as
 * they are (lib/engine/gpu.ts fetches kernels/*.wgsl from the URL the page passes as `kernelsUrl`).
 * `--port=0` picks a free port; the first line printed is `serving http://127.0.0.1:PORT/`.
 *
 * Only regular files whose real path (after decoding and every symlink) lies inside web/ (the
 * page's two files), kernels/ or data_file/ are served; a `Host` other than this server's own
 * 127.0.0.1 or localhost port is 421 (DNS rebinding); every answer carries `nosniff` and a
 * Content-Security-Policy that allows the page's own script, style and fetches only.
 * @module
 */
import { parseArgs } from "@std/cli/parse-args";
import { fromFileUrl, join, SEPARATOR } from "@std/path";

/** The host the server binds: the page is for this machine only. */
export const HOST = "127.0.0.1";
/** The default port of `deno task serve`. */
export const DEFAULT_PORT = 8787;

const ROOT = new URL("./", import.meta.url);

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json; charset=utf-8",
  wgsl: "text/plain; charset=utf-8",
  svg: "image/svg+xml",
  txt: "text/plain; charset=utf-8",
  md: "text/plain; charset=utf-8",
  safetensors: "application/octet-stream",
};

/** Folders served as they are, below the repository root. */
const STATIC_FOLDERS = ["kernels", "data_file"] as const;

/** The web page's files served from web/ at the root of the site. */
const PAGE_FILES: Record<string, string> = {
  "/": "web/index.html",
  "/index.html": "web/index.html",
  "/style.css": "web/style.css",
};

type BundleFn = (options: {
  entrypoints: string[];
  platform: "browser";
  format: "esm";
  write: false;
  minify?: boolean;
  sourcemap?: "inline" | "linked" | "external";
}) => Promise<{
  success: boolean;
  errors: { text?: string; message?: string }[];
  outputFiles?: { path: string; contents?: Uint8Array; text?: () => string }[];
}>;

/**
 * Bundles web/app.ts (and the lib/ modules and npm packages it imports) into one browser ES
 * module with `Deno.bundle`. Throws with the bundler's messages on failure.
 */
export async function bundleApp(root: URL = ROOT): Promise<Uint8Array<ArrayBuffer>> {
  const bundle = (Deno as unknown as { bundle?: BundleFn }).bundle;
  if (typeof bundle !== "function") {
    throw new Error(
      "Deno.bundle is not available: run with `deno run --unstable-bundle` (Deno >= 2.4), " +
        "as `deno task serve` does",
    );
  }
  const result = await bundle({
    entrypoints: [new URL("web/app.ts", root).pathname],
    platform: "browser",
    format: "esm",
    write: false,
    sourcemap: "inline",
  });
  const out = result.outputFiles?.find((f) => f.path.endsWith(".js") || f.path === "<stdout>") ??
    result.outputFiles?.[0];
  if (!result.success || !out) {
    const msgs = result.errors.map((e) => e.text ?? e.message ?? String(e)).join("\n");
    throw new Error(`bundling web/app.ts failed:\n${msgs || "no output"}`);
  }
  const bytes = out.contents ?? new TextEncoder().encode(out.text!());
  return new Uint8Array(bytes);
}

/**
 * The file a request path maps to, relative to the repository root, or null (404). Only
 * web/index.html, web/style.css and files below kernels/ and data_file/ are reachable; "..",
 * empty, hidden and backslash segments are refused.
 */
export function resolveRequestPath(pathname: string): string | null {
  if (PAGE_FILES[pathname]) return PAGE_FILES[pathname];
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return null;
  }
  const parts = decoded.split("/").slice(1);
  if (parts.length < 2 || !(STATIC_FOLDERS as readonly string[]).includes(parts[0])) return null;
  if (parts.some((p) => p === "" || p.startsWith(".") || p.includes("\\") || p.includes("\0"))) {
    return null;
  }
  return parts.join("/");
}

function contentType(path: string): string {
  const ext = path.slice(path.lastIndexOf(".") + 1).toLowerCase();
  return TYPES[ext] ?? "application/octet-stream";
}

/**
 * The Content-Security-Policy of every answer: the page runs its one bundled module script
 * (/app.js) and its stylesheet from this origin, fetches kernels/ and data_file/ from it, and
 * uses `data:` only for its empty favicon; nothing inline, no eval, no other origin, no framing.
 * WebGPU needs no CSP source. The adapter download is a `blob:` link, which CSP does not govern.
 */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

/** Headers sent with every answer, errors included. */
const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "content-security-policy": CONTENT_SECURITY_POLICY,
  "referrer-policy": "no-referrer",
  "cross-origin-resource-policy": "same-origin",
};

/**
 * Whether a `Host` header names this server: 127.0.0.1 or localhost with its own port. Any other
 * value (another name resolving to 127.0.0.1 after DNS rebinding, a missing port) is refused,
 * so a page on another origin cannot read the served files through a name it controls.
 */
export function hostAllowed(host: string | null, port: number): boolean {
  if (host === null) return false;
  const h = host.toLowerCase();
  return h === `${HOST}:${port}` || h === `localhost:${port}`;
}

/** Whether `path` is `dir` or lies below it (both real, absolute paths). */
function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(SEPARATOR) ? dir : dir + SEPARATOR);
}

/**
 * The real path of the regular file a request maps to, or null (404). The request path is
 * decoded once ({@linkcode resolveRequestPath}) and its parts are joined as plain names, never
 * parsed as a URL again (a second decoding turned `%252e%252e` into `..`); the result is then
 * resolved with `Deno.realPath` (every symlink) and must be a page file or lie inside the real
 * kernels/ or data_file/ folder, and be a regular file (no FIFO, device or folder).
 */
export async function servedFile(pathname: string, root: URL): Promise<string | null> {
  const rel = resolveRequestPath(pathname);
  if (rel === null) return null;
  const base = fromFileUrl(root);
  const parts = rel.split("/");
  try {
    const folder = await Deno.realPath(join(base, parts[0]));
    const real = await Deno.realPath(join(base, ...parts));
    if (real === folder || !inside(real, folder)) return null;
    return (await Deno.lstat(real)).isFile ? real : null;
  } catch {
    return null;
  }
}

/** Options of {@linkcode startServer}. */
export interface ServeOptions {
  /** 0 picks a free port. */
  port: number;
  /** Repository root (default: this file's folder). */
  root?: URL;
  /** Log each request that fails. */
  verbose?: boolean;
}

/** A running server. */
export interface RunningServer {
  /** "http://127.0.0.1:PORT/". */
  url: string;
  port: number;
  /** Stops accepting connections and waits for the server to finish. */
  close(): Promise<void>;
  /** Resolves when the server has stopped. */
  finished: Promise<void>;
}

/** A port that is in use, with the one-line message `deno task serve` prints. */
export class PortInUseError extends Error {
  constructor(readonly port: number) {
    super(
      `port ${port} on ${HOST} is already in use; pass another with --port=N ` +
        `(--port=0 picks a free one)`,
    );
    this.name = "PortInUseError";
  }
}

/** What {@linkcode requestHandler} serves. */
export interface HandlerOptions {
  /** Repository root. */
  root: URL;
  /** The port the server listens on (the only one a `Host` header may name). */
  port: () => number;
  /** The bundled /app.js, once built. */
  app: () => Uint8Array<ArrayBuffer> | null;
  verbose?: boolean;
}

/**
 * The server's request handler (exported for tests, which call it without a socket): a foreign
 * `Host` is 421, a method other than GET/HEAD 405, a path outside the page, kernels/ and
 * data_file/ (after decoding and every symlink) 404; every answer carries
 * {@linkcode SECURITY_HEADERS}.
 */
export function requestHandler(opts: HandlerOptions): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    const headers = { ...SECURITY_HEADERS };
    const url = new URL(req.url);
    if (!hostAllowed(req.headers.get("host") ?? url.host, opts.port())) {
      return new Response("misdirected request\n", { status: 421, headers });
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      return new Response("method not allowed\n", {
        status: 405,
        headers: { ...headers, allow: "GET, HEAD" },
      });
    }
    const { pathname } = url;
    const app = opts.app();
    if (pathname === "/app.js" && app) {
      return new Response(req.method === "HEAD" ? null : app, {
        headers: { ...headers, "content-type": TYPES.js },
      });
    }
    const real = await servedFile(pathname, opts.root);
    if (real === null) return new Response("not found\n", { status: 404, headers });
    let file: Deno.FsFile;
    try {
      file = await Deno.open(real, { read: true });
    } catch (e) {
      if (opts.verbose) console.error(`${pathname}: ${(e as Error).message}`);
      return new Response("cannot read\n", { status: 500, headers });
    }
    // The file opened is checked again: it may have been swapped since servedFile looked.
    const info = await file.stat();
    if (!info.isFile) {
      file.close();
      return new Response("not found\n", { status: 404, headers });
    }
    const h = {
      ...headers,
      "content-type": contentType(real),
      "content-length": String(info.size),
    };
    if (req.method === "HEAD") {
      file.close();
      return new Response(null, { headers: h });
    }
    return new Response(file.readable, { headers: h });
  };
}

/**
 * Starts serving (see the module doc): binds the port first, so a taken port fails at once, then
 * bundles the page; a bundling failure stops the server and throws.
 */
export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const root = opts.root ?? ROOT;
  let app: Uint8Array<ArrayBuffer> | null = null;
  let boundPort = opts.port;
  const handler = requestHandler({
    root,
    port: () => boundPort,
    app: () => app,
    verbose: opts.verbose,
  });
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = Deno.serve({ hostname: HOST, port: opts.port, onListen: () => {} }, handler);
  } catch (e) {
    if (e instanceof Deno.errors.AddrInUse) throw new PortInUseError(opts.port);
    throw e;
  }
  boundPort = server.addr.port;
  try {
    app = await bundleApp(root);
  } catch (e) {
    await server.shutdown();
    throw e;
  }
  const port = server.addr.port;
  return {
    url: `http://${HOST}:${port}/`,
    port,
    close: () => server.shutdown(),
    finished: server.finished,
  };
}

if (import.meta.main) {
  const flags = parseArgs(Deno.args, { string: ["port"], boolean: ["help", "verbose"] });
  if (flags.help) {
    console.log(
      `Usage: deno task serve [--port=${DEFAULT_PORT}] [--verbose]\n\n` +
        `Serves the browser fine-tuning page on http://${HOST}:PORT/ (--port=0: a free port).`,
    );
    Deno.exit(0);
  }
  const port = flags.port === undefined ? DEFAULT_PORT : Number(flags.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`error: --port must be an integer from 0 to 65535, got '${flags.port}'`);
    Deno.exit(2);
  }
  try {
    const s = await startServer({ port, verbose: flags.verbose });
    console.log(`serving ${s.url}`);
    console.log("open it in a browser with WebGPU (Chrome, Edge; Ctrl-C stops the server)");
    await s.finished;
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    Deno.exit(e instanceof PortInUseError ? 1 : 2);
  }
}
