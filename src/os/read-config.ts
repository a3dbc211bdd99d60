import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type ConfigError,
  type NodeConfig,
  resolveConfig,
  settingsFromCmdline,
  settingsFromFile,
} from "./node-config.js";

/**
 * The node configuration as the supervisor and the services see it: `flatgrid.*` keys from
 * the kernel command line, then node.conf of each configuration directory (a later one wins). A file that cannot be read is reported
 * through `say` and skipped; bad keys come back as errors, never thrown.
 */
export function readNodeConfig(
  configDirs: string | string[],
  cmdlineFile: string,
  say: (msg: string) => void = () => {},
): { config: NodeConfig; errors: ConfigError[] } {
  const settings = [];
  const errors: ConfigError[] = [];
  try {
    settings.push(...settingsFromCmdline(readFileSync(cmdlineFile, "utf8")));
  } catch (err) {
    say(`cannot read ${cmdlineFile}: ${(err as Error).message}`);
  }
  for (const dir of typeof configDirs === "string" ? [configDirs] : configDirs) {
    const file = join(dir, "node.conf");
    if (!existsSync(file)) continue;
    const parsed = settingsFromFile(readFileSync(file, "utf8"), file);
    settings.push(...parsed.settings);
    errors.push(...parsed.errors);
  }
  return resolveConfig(settings, errors);
}
