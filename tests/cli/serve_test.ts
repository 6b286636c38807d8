/**
 * The server's request handler (serve.ts) against hostile requests, called without a socket (the
 * test process has no --allow-net): encoded traversals, symlinks planted inside a served folder,
 * special files, foreign `Host` values, and the security headers on every answer. The served
 * tree is a temporary copy of the layout (web/, kernels/, data_file/) with a secret beside it.
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { join, toFileUrl } from "@std/path";
import { CONTENT_SECURITY_POLICY, hostAllowed, requestHandler, servedFile } from "../../serve.ts";
import { withTempDir } from "../_util.ts";

const PORT = 8799;

/** Writes the served tree into `outside`/repo, with a secret beside it; returns the repo folder. */
async function tree(outside: string): Promise<string> {
  const root = join(outside, "repo");
  for (const d of ["web", "kernels", "data_file/tiny", ".git"]) {
    await Deno.mkdir(join(root, d), { recursive: true });
  }
  await Deno.writeTextFile(join(root, "web/index.html"), "<!doctype html><p>page</p>\n");
  await Deno.writeTextFile(join(root, "web/style.css"), "p{}\n");
  await Deno.writeTextFile(join(root, "kernels/matmul.wgsl"), "// kernel\n");
  await Deno.writeTextFile(join(root, "data_file/tiny/config.json"), "{}\n");
  await Deno.writeTextFile(join(root, "deno.json"), '{"secret": "repo"}\n');
  await Deno.writeTextFile(join(root, ".git/config"), "[core] secret\n");
  await Deno.writeTextFile(join(outside, "secret.txt"), "outside secret\n");
  // Links planted inside a served folder: out of it (relative and absolute), to a folder, and
  // one that stays inside (allowed).
  await Deno.symlink("../deno.json", join(root, "kernels/up.wgsl"));
  await Deno.symlink(join(outside, "secret.txt"), join(root, "data_file/abs.txt"));
  await Deno.symlink("..", join(root, "data_file/parent"));
  await Deno.symlink("matmul.wgsl", join(root, "kernels/alias.wgsl"));
  return root;
}

function get(path: string, host: string | null = `127.0.0.1:${PORT}`, method = "GET"): Request {
  const headers = new Headers();
  if (host !== null) headers.set("host", host);
  return new Request(`http://127.0.0.1:${PORT}${path}`, { method, headers });
}

Deno.test("serve: encoded traversals, planted symlinks and special files are 404", async () => {
  await withTempDir("hira-serve-", async (outside) => {
    const root = await tree(outside);
    const fifo = join(root, "kernels/fifo.wgsl");
    const mk = await new Deno.Command("mkfifo", { args: [fifo] }).output().catch(() => null);
    const handler = requestHandler({
      root: toFileUrl(root + "/"),
      port: () => PORT,
      app: () => new TextEncoder().encode("// app\n"),
    });
    const ok: Record<string, string> = {
      "/": "page",
      "/style.css": "p{}",
      "/app.js": "// app",
      "/kernels/matmul.wgsl": "// kernel",
      "/kernels/alias.wgsl": "// kernel",
      "/data_file/tiny/config.json": "{}",
    };
    for (const [path, body] of Object.entries(ok)) {
      const res = await handler(get(path));
      assertEquals(res.status, 200, path);
      assert((await res.text()).includes(body), path);
      assertEquals(res.headers.get("x-content-type-options"), "nosniff", path);
      assertEquals(res.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY, path);
    }
    const bad = [
      "/deno.json",
      "/.git/config",
      "/kernels/%2e%2e/deno.json",
      "/kernels/%252e%252e/deno.json",
      "/kernels/%252e%252e/.git/config",
      "/kernels/%25252e%25252e/deno.json",
      "/data_file/..%2fdeno.json",
      "/data_file/..%252fdeno.json",
      "/data_file/%2e%2e%2f%2e%2e%2fsecret.txt",
      "/kernels/..%5cdeno.json",
      "/kernels/%5c..%5cdeno.json",
      "/kernels\\..\\deno.json",
      "/kernels/%00matmul.wgsl",
      "/kernels/up.wgsl",
      "/data_file/abs.txt",
      "/data_file/parent/deno.json",
      "/data_file/parent/kernels/matmul.wgsl",
      "/kernels/",
      "/data_file/tiny",
      "/web/index.html",
      "/kernels/missing.wgsl",
      "/kernels/%ZZ",
    ];
    if (mk?.success) bad.push("/kernels/fifo.wgsl");
    for (const path of bad) {
      const res = await handler(get(path));
      const text = await res.text();
      assertEquals(res.status, 404, `${path}: ${text}`);
      assert(!text.includes("secret"), path);
      assertEquals(res.headers.get("x-content-type-options"), "nosniff", path);
    }
    // The lower-level check agrees, and resolves what it allows to the real file.
    assertEquals(await servedFile("/kernels/%252e%252e/deno.json", toFileUrl(root + "/")), null);
    assertEquals(
      await servedFile("/kernels/alias.wgsl", toFileUrl(root + "/")),
      await Deno.realPath(join(root, "kernels/matmul.wgsl")),
    );
  });
});

Deno.test("serve: only its own loopback Host and port are answered (421 otherwise)", async () => {
  await withTempDir("hira-serve-", async (outside) => {
    const root = await tree(outside);
    const handler = requestHandler({
      root: toFileUrl(root + "/"),
      port: () => PORT,
      app: () => null,
    });
    for (const host of [`127.0.0.1:${PORT}`, `localhost:${PORT}`, `LOCALHOST:${PORT}`]) {
      assertEquals((await handler(get("/kernels/matmul.wgsl", host))).status, 200, host);
    }
    for (
      const host of [
        `evil.example:${PORT}`,
        `127.0.0.1:${PORT + 1}`,
        "127.0.0.1",
        "localhost",
        `127.0.0.2:${PORT}`,
        `[::1]:${PORT}`,
        `127.0.0.1.nip.io:${PORT}`,
        "",
      ]
    ) {
      const res = await handler(get("/kernels/matmul.wgsl", host));
      assertEquals(res.status, 421, host);
      assert(!(await res.text()).includes("kernel"), host);
      assertEquals(res.headers.get("content-security-policy"), CONTENT_SECURITY_POLICY, host);
    }
    assertEquals((await handler(get("/", `127.0.0.1:${PORT}`, "POST"))).status, 405);
    assertEquals(hostAllowed(null, PORT), false);
    assert(hostAllowed(`127.0.0.1:${PORT}`, PORT));
  });
});

Deno.test("serve: the CSP lets the page's own module script and fetches run, nothing else", () => {
  const d = Object.fromEntries(
    CONTENT_SECURITY_POLICY.split(";").map((s) => s.trim().split(/\s+/)).map((
      [k, ...v],
    ) => [k, v]),
  );
  assertEquals(d["default-src"], ["'none'"]);
  assertEquals(d["script-src"], ["'self'"], "no inline script, no eval");
  assertEquals(d["connect-src"], ["'self'"], "kernels/ and data_file/ fetches");
  assertEquals(d["frame-ancestors"], ["'none'"]);
  // web/index.html loads exactly what the policy allows: /app.js as a module, /style.css, and
  // a data: favicon; no inline <script> or style attribute.
  const html = Deno.readTextFileSync(new URL("../../web/index.html", import.meta.url));
  assert(html.includes('<script type="module" src="/app.js"></script>'));
  assert(!/<script(?![^>]*\ssrc=)[^>]*>/.test(html), "no inline script");
  assert(!/\sstyle=/.test(html) && !/<style/.test(html), "no inline style");
  assert(!/\son[a-z]+=/.test(html), "no inline event handler");
});
