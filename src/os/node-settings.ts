import { randomBytes, scryptSync, timingSafeEqual } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type ConfigSetting,
  type NodeConfig,
  resolveConfig,
  settingsFromCmdline,
  settingsFromFile,
} from "./node-config.js";
import { writeFileAtomic } from "./write-file-atomic.js";

/**
 * The node's own settings: what the console's first-boot form (or an operator through the
 * supervisor's API) stores in node.conf on the data partition, and the console password
 * beside it. Checking and merging are pure; writes are atomic (a power cut leaves the old
 * file or the new one, never half of one).
 */

/** The keys the console may set. The rest (format, modules...) belong to the boot menu. */
export const SETTABLE_KEYS = [
  "flatgrid.grid",
  "flatgrid.token",
  "flatgrid.hostname",
  "flatgrid.net",
  "flatgrid.ip",
  "flatgrid.gateway",
  "flatgrid.dns",
] as const;

export const NODE_CONF = "node.conf";
export const CONSOLE_PASSWORD_FILE = "console-password";
export const MIN_PASSWORD = 8;

export interface SettingProblem {
  key: string;
  message: string;
}

export class SettingsError extends Error {
  constructor(readonly problems: SettingProblem[]) {
    super(problems.map((p) => `${p.key}: ${p.message}`).join("; "));
    this.name = "SettingsError";
  }
}

/**
 * Checks updates against the node's other settings (`before`, in the order they apply):
 * each key must be settable and its value valid, and the result consistent (static needs an
 * address; a grid needs its token). An empty value removes the key from the settings `own`
 * says are the node's own file (the command line's stay and may then apply). Pure.
 */
export function checkSettings(
  before: readonly ConfigSetting[],
  updates: Readonly<Record<string, string>>,
  own: (s: ConfigSetting) => boolean = () => true,
): NodeConfig {
  const problems: SettingProblem[] = [];
  for (const key of Object.keys(updates)) {
    if (!(SETTABLE_KEYS as readonly string[]).includes(key))
      problems.push({
        key,
        message: `cannot be set here (only ${SETTABLE_KEYS.join(", ")})`,
      });
  }
  if (problems.length) throw new SettingsError(problems);
  const source = "the new settings";
  const kept = before.filter((s) => !(s.key in updates && own(s)));
  const added = Object.entries(updates)
    .filter(([, v]) => v.trim() !== "")
    .map(([key, value]) => ({ source, key, value: value.trim() }));
  const { config, errors } = resolveConfig([...kept, ...added]);
  // Problems that were there before (a bad key on the command line) are not this request's:
  // only the ones its settings bring are.
  const known = new Set(resolveConfig(before).errors.map((e) => `${e.key}\n${e.message}`));
  for (const e of errors)
    if (e.source === source || !known.has(`${e.key}\n${e.message}`))
      problems.push({ key: e.key, message: e.message });
  if (problems.length) throw new SettingsError(problems);
  return config;
}

/**
 * node.conf with the updates applied: the lines of each updated key are replaced (an empty
 * value drops them), comments and other keys stay where they are. Pure.
 */
export function mergeNodeConf(text: string, updates: Readonly<Record<string, string>>): string {
  const pending = new Map(Object.entries(updates));
  const keyOf = (line: string) => {
    const t = line.trim();
    if (t === "" || t.startsWith("#") || !t.includes("=")) return null;
    const name = t.slice(0, t.indexOf("=")).trim();
    return name.startsWith("flatgrid.") ? name : `flatgrid.${name}`;
  };
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const key = keyOf(line);
    if (key === null || !(key in updates)) {
      out.push(line);
      continue;
    }
    const value = pending.get(key);
    pending.delete(key);
    // A key given twice in the file: the first line takes the new value, the others go.
    if (value !== undefined && value !== "") out.push(`${key}=${value}`);
  }
  while (out.length && out.at(-1) === "") out.pop();
  for (const [key, value] of pending) if (value !== "") out.push(`${key}=${value}`);
  return out.length ? `${out.join("\n")}\n` : "";
}

/** Every setting in the order it applies: the command line, then each directory's node.conf. */
export function allSettings(cmdlineFile: string, configDirs: readonly string[]): ConfigSetting[] {
  const settings: ConfigSetting[] = [];
  try {
    settings.push(...settingsFromCmdline(readFileSync(cmdlineFile, "utf8")));
  } catch {
    // A node without a readable command line has only its files.
  }
  for (const dir of configDirs) {
    const file = join(dir, NODE_CONF);
    if (existsSync(file))
      settings.push(...settingsFromFile(readFileSync(file, "utf8"), file).settings);
  }
  return settings;
}

/** A password as `scrypt$salt$hash` (hex): never the password itself. */
export function hashPassword(password: string, salt = randomBytes(16)): string {
  const hash = scryptSync(password, salt, 32);
  return `scrypt$${salt.toString("hex")}$${hash.toString("hex")}`;
}

export function checkPassword(password: string, stored: string): boolean {
  const [kind, salt, hash] = stored.trim().split("$");
  if (kind !== "scrypt" || !salt || !hash) return false;
  const want = Buffer.from(hash, "hex");
  const got = scryptSync(password, Buffer.from(salt, "hex"), want.length);
  return want.length > 0 && timingSafeEqual(want, got);
}

export function passwordProblem(password: string): string | null {
  if (password.length < MIN_PASSWORD) return `is too short: at least ${MIN_PASSWORD} characters`;
  return null;
}

export interface StoreRequest {
  settings: Record<string, string>;
  consolePassword?: string;
  currentPassword?: string;
}

/** Where the node's own settings live, and the rules for changing them. */
export class NodeSettingsStore {
  constructor(
    private readonly o: {
      cmdline: string;
      /** Directories whose node.conf applies before the node's own (/etc/flatgrid). */
      configDirs: readonly string[];
      /** The node's own directory (the data partition), or null when it has none. */
      dir: string | null;
    },
  ) {}

  get dir(): string | null {
    return this.o.dir;
  }

  private passwordFile(): string | null {
    return this.o.dir ? join(this.o.dir, CONSOLE_PASSWORD_FILE) : null;
  }

  checkPassword(password: string): { set: boolean; ok: boolean } {
    const file = this.passwordFile();
    if (!file || !existsSync(file)) return { set: false, ok: false };
    return { set: true, ok: checkPassword(password, readFileSync(file, "utf8")) };
  }

  /**
   * Checks and stores settings and a console password; returns the configuration they make
   * and the keys that changed. Nothing is written unless everything is right. Changing them
   * needs the console password, once one is set, or an admin token of the grid.
   */
  store(
    request: StoreRequest,
    /** Whether the grid said request.currentPassword is one of its admin tokens. */
    adminToken = false,
  ): { config: NodeConfig; file: string; changed: string[] } {
    const dir = this.o.dir;
    if (!dir) throw new NoStorageError();
    const problems: SettingProblem[] = [];
    const password = this.checkPassword(request.currentPassword ?? "");
    if (password.set && !password.ok && !adminToken)
      problems.push({
        key: "currentPassword",
        message: request.currentPassword
          ? "is not the console password"
          : "is needed: a console password is set",
      });
    if (request.consolePassword !== undefined) {
      const weak = passwordProblem(request.consolePassword);
      if (weak) problems.push({ key: "consolePassword", message: weak });
    } else if (!password.set)
      problems.push({ key: "consolePassword", message: "is needed: none is set yet" });
    const file = join(dir, NODE_CONF);
    const before = allSettings(this.o.cmdline, [...this.o.configDirs, dir]);
    let config: NodeConfig | null = null;
    try {
      config = checkSettings(before, request.settings, (s) => s.source.startsWith(`${file}:`));
    } catch (err) {
      if (!(err instanceof SettingsError)) throw err;
      problems.push(...err.problems);
    }
    if (problems.length || !config) throw new SettingsError(problems);
    const old = existsSync(file) ? readFileSync(file, "utf8") : "";
    const mine = settingsFromFile(old, file).settings;
    const changed = Object.entries(request.settings)
      .filter(([k, v]) => (mine.findLast((s) => s.key === k)?.value ?? "") !== v.trim())
      .map(([k]) => k);
    const trimmed = Object.fromEntries(
      Object.entries(request.settings).map(([k, v]) => [k, v.trim()]),
    );
    writeFileAtomic(file, mergeNodeConf(old, trimmed), 0o600);
    if (request.consolePassword !== undefined)
      writeFileAtomic(
        join(dir, CONSOLE_PASSWORD_FILE),
        `${hashPassword(request.consolePassword)}\n`,
      );
    return { config, file, changed };
  }
}

export class NoStorageError extends Error {
  constructor() {
    super(
      "this node has no data partition: settings stored now would be gone at the next boot (see `flatgrid disks`)",
    );
    this.name = "NoStorageError";
  }
}
