/**
 * `npm run bench -- NAME`: runs one benchmark and prints its measurements as JSON lines on
 * stdout (progress goes to stderr).
 */
const BENCHES: Record<string, () => Promise<{ run: () => Promise<void> }>> = {
  grid: () => import("./grid.js"),
  apps: () => import("./apps.js"),
  boot: () => import("./boot.js"),
  vmm: () => import("./vmm.js"),
};

const name = process.argv[2];
if (!name || !BENCHES[name]) {
  process.stderr.write(
    `usage: npm run bench -- NAME (one of: ${Object.keys(BENCHES).join(", ")})\n`,
  );
  process.exit(2);
}
const mod = await (BENCHES[name] as () => Promise<{ run: () => Promise<void> }>)();
await mod.run();
