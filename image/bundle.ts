/**
 * `node dist/image/bundle.js` (part of `npm run build`): each program a node runs as one
 * file, bundled with esbuild from what tsc wrote to dist/. A Node.js process otherwise spends
 * most of its start in the module loader: resolving, reading and linking some 300 modules of
 * ours, and lexing every CommonJS file of etcd3, gRPC and x509 for its exports. On the 2-core
 * machines the cluster harness runs 5 nodes on, that was over a second of each grid
 * service's start, so it delayed every node's first announcement.
 *
 * bundle/src/ mirrors dist/src/: the node image installs it as /usr/lib/flatgrid/dist/src/,
 * and the cluster harness runs it in place. Paths a module computes from its own URL
 * (`new URL("../cli/main.js", import.meta.url)`, a worker file, the catalog) therefore still
 * point where they did: each module's `import.meta.url` becomes the URL of the file it was
 * before bundling, and a package's `__dirname` the directory it came from (etcd3 reads its
 * .proto files from there at run time: see RUNTIME_FILES).
 */
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { build, type Plugin } from "esbuild";

const ROOT = join(import.meta.dirname, "..", "..");
const DIST = join(ROOT, "dist");
export const BUNDLE = join(ROOT, "bundle");

/**
 * Every file Node.js starts from: the programs, and the worker threads the monitor starts
 * by path (src/vmm/vm.ts, src/vmm/virtio/queue-thread.ts).
 */
const ENTRIES = [
  "src/os/main.js",
  "src/grid/main.js",
  "src/cli/main.js",
  // The two halves of the CLI, which src/cli/main.ts loads by path: a monitor (`flatgrid
  // vmm`) parses only its own code.
  "src/cli/vmm-command.js",
  "src/cli/program.js",
  "src/vmm/vcpu-worker.js",
  "src/vmm/virtio/queue-thread-worker.js",
];

/**
 * Loaded from node_modules at run time: koffi finds its native addon by a path it computes;
 * blessed requires its widgets and terminfo files by computed names.
 */
const EXTERNAL = ["koffi", "blessed"];

/**
 * All a node needs of node_modules beside the bundles: the EXTERNAL packages (koffi with its
 * prebuilt addon for x86-64 Linux) and etcd3's .proto files, which it parses at start. Other
 * packages name files by __dirname only on paths flatgrid never takes: pino's transports,
 * gRPC's channelz and ORCA, commander's executable subcommands.
 */
export const RUNTIME_FILES = [
  "node_modules/koffi",
  "node_modules/@koromix/koffi-linux-x64",
  "node_modules/blessed",
  "node_modules/etcd3/proto",
];

/**
 * Defines `require` (the CommonJS packages inside call it for Node's built-ins) and the two
 * helpers the plugin below rewrites module paths to, relative to this output file.
 */
const BANNER = [
  'import { createRequire as __fgCreateRequire } from "node:module";',
  'import { dirname as __fgDirname, join as __fgJoin } from "node:path";',
  'import { fileURLToPath as __fgToPath, pathToFileURL as __fgToUrl } from "node:url";',
  "const require = __fgCreateRequire(import.meta.url);",
  "const __fgHere = __fgDirname(__fgToPath(import.meta.url));",
  "const __fgPath = (rel) => __fgJoin(__fgHere, rel);",
  "const __fgUrl = (rel) => __fgToUrl(__fgPath(rel)).href;",
].join("\n");

/** Rewrites module-relative paths for one entry (see the file comment). */
function modulePaths(entry: string): Plugin {
  const from = dirname(join(DIST, entry));
  return {
    name: "flatgrid-module-paths",
    setup(b) {
      b.onLoad({ filter: /\.[cm]?js$/ }, (args) => {
        const source = readFileSync(args.path, "utf8");
        if (args.path.startsWith(`${DIST}/`)) {
          if (!source.includes("import.meta.url")) return undefined;
          const rel = JSON.stringify(relative(from, args.path));
          return {
            contents: source.replaceAll("import.meta.url", `__fgUrl(${rel})`),
            loader: "js",
          };
        }
        if (!/\b__(dirname|filename)\b/.test(source)) return undefined;
        const dir = JSON.stringify(relative(from, dirname(args.path)));
        const file = JSON.stringify(relative(from, args.path));
        return {
          contents: source
            .replace(/\b__dirname\b/g, `__fgPath(${dir})`)
            .replace(/\b__filename\b/g, `__fgPath(${file})`),
          loader: "js",
        };
      });
    },
  };
}

export async function bundle(): Promise<void> {
  rmSync(BUNDLE, { recursive: true, force: true });
  for (const entry of ENTRIES) {
    const outfile = join(BUNDLE, entry);
    mkdirSync(dirname(outfile), { recursive: true });
    const result = await build({
      entryPoints: [join(DIST, entry)],
      outfile,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      external: EXTERNAL,
      banner: { js: BANNER },
      plugins: [modulePaths(entry)],
      // Names stay: stack traces and logs name our functions and classes.
      minifySyntax: true,
      minifyWhitespace: false,
      minifyIdentifiers: false,
      legalComments: "none",
      logLevel: "warning",
    });
    if (result.errors.length > 0) throw new Error(`bundling ${entry} failed`);
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  await bundle();
}
