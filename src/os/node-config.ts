import { isIPv4 } from "node:net";

/**
 * Node configuration: `flatgrid.*` keys from the kernel command line (set once for a rack by
 * PXE or the boot menu) and from /etc/flatgrid/node.conf (the node's own, written by the
 * console on the data partition; it wins over the command line). Pure: callers read files.
 *
 * A bad key never stops the node: it is reported with its source, key and value, the key
 * keeps its default, and the node comes up far enough to show the error.
 */

export interface NodeConfig {
  /** Grid to create or join; null until configured (first boot). */
  grid: string | null;
  /** Join token; never printed. */
  token: string | null;
  hostname: string | null;
  net: "dhcp" | "static";
  /** Interface to configure; null picks the first Ethernet link with a carrier. */
  iface: string | null;
  /** Static address with prefix length, e.g. 10.0.0.5/24. */
  ip: string | null;
  gateway: string | null;
  dns: string[];
  /** Whether a blank local disk may be formatted as the FLATGRID data partition. */
  format: "never" | "blank";
  /** Extra kernel modules to load at boot. */
  modules: string[];
  debug: boolean;
  /**
   * A serial port (ttyS1...) that gets a root shell, for debugging and the simulator's
   * tests; null (the default) gives none. Only someone who controls the kernel command
   * line can set it, and that person owns the machine anyway.
   */
  debugShell: string | null;
  /**
   * Terminals that show the console (tty1, ttyS1...): the supervisor runs one console on
   * each. Empty: none.
   */
  consoles: string[];
  /**
   * Multiplies the grid's timings (leases, deadlines, etcd's raft timeouts). They are set
   * for real servers; a node emulated in software (the simulator without KVM) runs tens of
   * times slower and needs them longer, or its controller lease never survives.
   */
  timescale: number;
}

export const DEFAULT_CONFIG: NodeConfig = {
  grid: null,
  token: null,
  hostname: null,
  net: "dhcp",
  iface: null,
  ip: null,
  gateway: null,
  dns: [],
  format: "never",
  modules: [],
  debug: false,
  debugShell: null,
  consoles: ["tty1"],
  timescale: 1,
};

export interface ConfigError {
  /** "kernel command line" or "FILE:LINE". */
  source: string;
  /** Full key name, e.g. flatgrid.ip. */
  key: string;
  /** The value as given (redacted for secrets). */
  value: string;
  message: string;
}

export interface ConfigSetting {
  source: string;
  key: string;
  value: string;
}

type Field = keyof NodeConfig;

const NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IFACE = /^[a-zA-Z0-9_.:-]{1,15}$/;
const MODULE = /^[a-zA-Z0-9_-]{1,64}$/;

interface KeySpec {
  field: Field;
  secret?: boolean;
  help: string;
  parse(value: string): NodeConfig[Field];
}

class BadValue extends Error {}

function list(value: string): string[] {
  return value
    .split(",")
    .map((v) => v.trim())
    .filter((v) => v.length > 0);
}

function cidr(value: string): string {
  const [addr, prefix, extra] = value.split("/");
  const bits = Number(prefix);
  if (
    extra !== undefined ||
    !addr ||
    !isIPv4(addr) ||
    !/^\d{1,2}$/.test(prefix ?? "") ||
    bits > 32
  ) {
    throw new BadValue("is not an IPv4 address with a prefix length, like 192.0.2.10/24");
  }
  return value;
}

function ipv4(value: string): string {
  if (!isIPv4(value)) throw new BadValue("is not an IPv4 address, like 192.0.2.1");
  return value;
}

export const CONFIG_KEYS: Record<string, KeySpec> = {
  "flatgrid.grid": {
    field: "grid",
    help: "grid name: lower-case letters, digits and -, up to 63",
    parse: (v) => {
      if (!NAME.test(v)) throw new BadValue("is not a grid name (a-z, 0-9 and -, up to 63)");
      return v;
    },
  },
  "flatgrid.token": {
    field: "token",
    secret: true,
    help: "join token shared by the grid's nodes, at least 16 characters",
    parse: (v) => {
      if (v.length < 16)
        throw new BadValue("is too short: a join token has at least 16 characters");
      return v;
    },
  },
  "flatgrid.hostname": {
    field: "hostname",
    help: "host name of this node",
    parse: (v) => {
      if (!NAME.test(v)) throw new BadValue("is not a host name (a-z, 0-9 and -, up to 63)");
      return v;
    },
  },
  "flatgrid.net": {
    field: "net",
    help: "dhcp or static",
    parse: (v) => {
      if (v !== "dhcp" && v !== "static") throw new BadValue('must be "dhcp" or "static"');
      return v;
    },
  },
  "flatgrid.iface": {
    field: "iface",
    help: "network interface to configure",
    parse: (v) => {
      if (!IFACE.test(v)) throw new BadValue("is not an interface name");
      return v;
    },
  },
  "flatgrid.ip": { field: "ip", help: "static address, like 192.0.2.10/24", parse: cidr },
  "flatgrid.gateway": { field: "gateway", help: "default gateway", parse: ipv4 },
  "flatgrid.dns": {
    field: "dns",
    help: "name servers, comma separated",
    parse: (v) => list(v).map(ipv4),
  },
  "flatgrid.format": {
    field: "format",
    help: "never or blank: whether a blank disk may become the data partition",
    parse: (v) => {
      if (v !== "never" && v !== "blank") throw new BadValue('must be "never" or "blank"');
      return v;
    },
  },
  "flatgrid.modules": {
    field: "modules",
    help: "extra kernel modules, comma separated",
    parse: (v) =>
      list(v).map((m) => {
        if (!MODULE.test(m)) throw new BadValue(`has "${m}", which is not a module name`);
        return m;
      }),
  },
  "flatgrid.debugshell": {
    field: "debugShell",
    help: "serial port for a root shell, like ttyS1",
    parse: (v) => {
      if (!/^ttyS[0-9]{1,2}$/.test(v)) throw new BadValue("is not a serial port like ttyS1");
      return v;
    },
  },
  "flatgrid.console": {
    field: "consoles",
    help: 'terminals that show the console, comma separated (like tty1,ttyS1), or "none"',
    parse: (v) =>
      v === "none"
        ? []
        : list(v).map((t) => {
            if (!/^(tty[1-9]|ttyS[0-9]{1,2})$/.test(t))
              throw new BadValue(`has "${t}", which is not a terminal like tty1 or ttyS1`);
            return t;
          }),
  },
  "flatgrid.timescale": {
    field: "timescale",
    help: "multiplies the grid's timings, 1 to 100 (for nodes emulated in software)",
    parse: (v) => {
      const n = Number(v);
      if (!/^\d+(\.\d+)?$/.test(v) || n < 1 || n > 100)
        throw new BadValue("is not a number from 1 to 100");
      return n;
    },
  },
  "flatgrid.debug": {
    field: "debug",
    help: "1 or 0",
    parse: (v) => {
      if (["1", "yes", "true", "on", ""].includes(v)) return true;
      if (["0", "no", "false", "off"].includes(v)) return false;
      throw new BadValue("must be 1 or 0");
    },
  },
};

/** Splits a kernel command line into words, honouring double quotes; stops at "--". */
export function splitCmdline(cmdline: string): string[] {
  const words: string[] = [];
  let current = "";
  let quoted = false;
  let inWord = false;
  for (const ch of cmdline) {
    if (ch === '"') {
      quoted = !quoted;
      inWord = true;
    } else if (!quoted && /\s/.test(ch)) {
      if (inWord) words.push(current);
      current = "";
      inWord = false;
    } else {
      current += ch;
      inWord = true;
    }
  }
  if (inWord) words.push(current);
  const end = words.indexOf("--");
  return end === -1 ? words : words.slice(0, end);
}

export function settingsFromCmdline(cmdline: string): ConfigSetting[] {
  return splitCmdline(cmdline)
    .filter((w) => w.startsWith("flatgrid."))
    .map((word) => {
      const eq = word.indexOf("=");
      return {
        source: "kernel command line",
        key: eq === -1 ? word : word.slice(0, eq),
        value: eq === -1 ? "" : word.slice(eq + 1),
      };
    });
}

/**
 * node.conf: `key = value` lines, keys with or without the "flatgrid." prefix, # comments.
 * A line that is not a setting is itself an error.
 */
export function settingsFromFile(
  text: string,
  file: string,
): { settings: ConfigSetting[]; errors: ConfigError[] } {
  const settings: ConfigSetting[] = [];
  const errors: ConfigError[] = [];
  text.split("\n").forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const source = `${file}:${index + 1}`;
    const eq = line.indexOf("=");
    if (eq === -1) {
      errors.push({ source, key: line, value: "", message: 'is not a "key = value" line' });
      return;
    }
    const name = line.slice(0, eq).trim();
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"'))
      value = value.slice(1, -1);
    settings.push({ source, key: name.startsWith("flatgrid.") ? name : `flatgrid.${name}`, value });
  });
  return { settings, errors };
}

/** Applies settings in order (later ones win) and checks the whole for consistency. */
export function resolveConfig(
  settings: readonly ConfigSetting[],
  earlierErrors: readonly ConfigError[] = [],
): { config: NodeConfig; errors: ConfigError[] } {
  const config: NodeConfig = { ...DEFAULT_CONFIG };
  const errors = [...earlierErrors];
  const from = new Map<Field, ConfigSetting>();
  for (const setting of settings) {
    const spec = CONFIG_KEYS[setting.key];
    if (!spec) {
      errors.push({
        ...setting,
        message: `is not a flatgrid key (known: ${Object.keys(CONFIG_KEYS).join(", ")})`,
      });
      continue;
    }
    const shown = spec.secret ? "(hidden)" : setting.value;
    try {
      (config as unknown as Record<Field, unknown>)[spec.field] = spec.parse(setting.value);
      from.set(spec.field, setting);
    } catch (err) {
      if (!(err instanceof BadValue)) throw err;
      errors.push({ ...setting, value: shown, message: err.message });
    }
  }
  if (config.net === "static" && !config.ip) {
    const where = from.get("net");
    errors.push({
      source: where?.source ?? "defaults",
      key: "flatgrid.net",
      value: "static",
      message: "needs flatgrid.ip (and usually flatgrid.gateway); falling back to dhcp",
    });
    config.net = "dhcp";
  }
  if ((config.grid === null) !== (config.token === null)) {
    const missing = config.grid === null ? "flatgrid.grid" : "flatgrid.token";
    errors.push({
      source: from.get(config.grid === null ? "token" : "grid")?.source ?? "defaults",
      key: missing,
      value: "",
      message: `is missing: a grid needs both flatgrid.grid and flatgrid.token`,
    });
  }
  return { config, errors };
}

export function formatConfigError(e: ConfigError): string {
  const shown = e.value === "" ? e.key : `${e.key}=${e.value}`;
  return `${e.source}: ${shown} ${e.message}`;
}

/** The configuration with secrets hidden, for showing and for the API. */
export function redactConfig(config: NodeConfig): NodeConfig {
  return { ...config, token: config.token === null ? null : "(hidden)" };
}
