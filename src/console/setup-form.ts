import { resolveConfig } from "../os/node-config.js";
import { passwordProblem } from "../os/node-settings.js";
import { esc } from "./screens.js";

/**
 * The setup form: grid name and join token (the same on every server: the first creates the
 * grid, the others join it), the network, and the console password. The form's state and
 * keys are pure (tested without a terminal); each field is checked with the node
 * configuration's own rules as the operator leaves it, and the supervisor checks them all
 * again when they are stored.
 */

export interface FieldSpec {
  key: string;
  label: string;
  kind: "text" | "secret" | "choice";
  choices?: string[];
  help: string;
  shown?: (form: SetupForm) => boolean;
}

const isStatic = (f: SetupForm) => f.values["flatgrid.net"] === "static";

export const SETUP_FIELDS: FieldSpec[] = [
  {
    key: "currentPassword",
    label: "Password or token",
    kind: "secret",
    help: "the console password, or an admin token of the grid: changing the settings needs one",
    shown: (f) => f.passwordSet,
  },
  {
    key: "flatgrid.grid",
    label: "Grid name",
    kind: "text",
    help: "the same on every server of the grid: a-z, 0-9 and -",
  },
  {
    key: "flatgrid.token",
    label: "Join token",
    kind: "secret",
    help: "the grid's shared secret, 16 characters or more, the same on every server",
  },
  {
    key: "flatgrid.net",
    label: "Network",
    kind: "choice",
    choices: ["dhcp", "static"],
    help: "Space or Left/Right chooses",
  },
  {
    key: "flatgrid.ip",
    label: "Address",
    kind: "text",
    help: "this server's address and prefix length, like 192.0.2.10/24",
    shown: isStatic,
  },
  {
    key: "flatgrid.gateway",
    label: "Gateway",
    kind: "text",
    help: "the default gateway, like 192.0.2.1 (may stay empty)",
    shown: isStatic,
  },
  {
    key: "flatgrid.dns",
    label: "DNS servers",
    kind: "text",
    help: "comma separated (may stay empty)",
    shown: isStatic,
  },
  {
    key: "consolePassword",
    label: "Console password",
    kind: "secret",
    help: "8 characters or more: anything that changes the node asks for it",
  },
  { key: "consolePassword2", label: "Password again", kind: "secret", help: "the same again" },
];

/** The keys of the form that are node settings (flatgrid.*), as the supervisor takes them. */
const NETWORK_DETAIL = ["flatgrid.ip", "flatgrid.gateway", "flatgrid.dns"];

export interface SetupRequest {
  settings: Record<string, string>;
  consolePassword?: string;
  currentPassword?: string;
}

export class SetupForm {
  values: Record<string, string> = {};
  problems = new Map<string, string>();
  /** Index into the visible fields; one past the last is the save button. */
  focus = 0;
  status = "";
  private readonly initial: Record<string, string>;

  constructor(
    current: Record<string, string>,
    /** Whether a console password is set: then it is asked for, and a new one is optional. */
    readonly passwordSet: boolean,
  ) {
    this.values = { "flatgrid.net": "dhcp", ...current };
    this.initial = { ...this.values };
  }

  visible(): FieldSpec[] {
    return SETUP_FIELDS.filter((f) => !f.shown || f.shown(this));
  }

  get onButton(): boolean {
    return this.focus >= this.visible().length;
  }

  private field(): FieldSpec | undefined {
    return this.visible()[this.focus];
  }

  /** The problem with one field's value, by the node configuration's rules; null if none. */
  check(key: string): string | null {
    const value = (this.values[key] ?? "").trim();
    if (key === "currentPassword")
      return this.passwordSet && value === "" ? "is needed to change the settings" : null;
    if (key === "consolePassword") {
      if (value === "" && this.passwordSet) return null;
      return value === "" ? "is needed: none is set yet" : passwordProblem(value);
    }
    if (key === "consolePassword2")
      return (this.values.consolePassword ?? "") === (this.values.consolePassword2 ?? "")
        ? null
        : "is not the same as the password above";
    // A choice is one of its choices; what it needs (an address) is that field's problem.
    if (SETUP_FIELDS.find((f) => f.key === key)?.kind === "choice") return null;
    if (value === "") {
      if (key === "flatgrid.grid") return "is needed";
      // A token already stored is never shown: left empty, it stays.
      if (key === "flatgrid.token") return this.initial["flatgrid.grid"] ? null : "is needed";
      if (key === "flatgrid.ip" && isStatic(this)) return "is needed for a static address";
      return null;
    }
    const { errors } = resolveConfig([{ source: "the form", key, value }]);
    return errors.find((e) => e.key === key)?.message ?? null;
  }

  private leave(): void {
    const f = this.field();
    if (!f) return;
    const problem = this.check(f.key);
    if (problem) this.problems.set(f.key, problem);
    else this.problems.delete(f.key);
  }

  private move(by: number): void {
    this.leave();
    const count = this.visible().length + 1;
    this.focus = (this.focus + by + count) % count;
  }

  /**
   * One key. Returns "submit" when the operator asked to save and every field is right;
   * the caller sends request() and gives the answer to answered().
   */
  key(ch: string | undefined, name: string | undefined, shift = false): "submit" | null {
    const f = this.field();
    if (name === "up" || (name === "tab" && shift)) this.move(-1);
    else if (name === "down" || name === "tab") this.move(1);
    else if (name === "enter") {
      if (!this.onButton) {
        this.move(1);
        return null;
      }
      return this.submit();
    } else if (f?.kind === "choice" && (name === "left" || name === "right" || name === "space")) {
      const choices = f.choices ?? [];
      const i = choices.indexOf(this.values[f.key] ?? "");
      const next = choices[(i + (name === "left" ? choices.length - 1 : 1)) % choices.length];
      if (next !== undefined) this.values[f.key] = next;
    } else if (f && f.kind !== "choice" && name === "backspace") {
      this.values[f.key] = (this.values[f.key] ?? "").slice(0, -1);
    } else if (f && f.kind !== "choice" && ch && ch.length === 1 && ch >= " " && ch <= "~") {
      // Printable ASCII only: a VT font and a serial line both have it.
      if ((this.values[f.key] ?? "").length < 200)
        this.values[f.key] = (this.values[f.key] ?? "") + ch;
    }
    return null;
  }

  private submit(): "submit" | null {
    this.problems.clear();
    for (const f of this.visible()) {
      const problem = this.check(f.key);
      if (problem) this.problems.set(f.key, problem);
    }
    const first = this.visible().findIndex((f) => this.problems.has(f.key));
    if (first >= 0) {
      this.focus = first;
      this.status = "Some fields are not right: they are marked.";
      return null;
    }
    this.status = "Saving...";
    return "submit";
  }

  /** What the supervisor's PUT /v1/node/settings takes. */
  request(): SetupRequest {
    const settings: Record<string, string> = {};
    for (const f of this.visible()) {
      if (!f.key.startsWith("flatgrid.")) continue;
      const value = (this.values[f.key] ?? "").trim();
      // A secret left empty (the token already stored is never shown) stays as it is.
      if (f.kind === "secret" && value === "") continue;
      if (value !== (this.initial[f.key] ?? "")) settings[f.key] = value;
    }
    // DHCP: a static address stored before would only confuse.
    if (!isStatic(this)) for (const k of NETWORK_DETAIL) if (this.initial[k]) settings[k] = "";
    const request: SetupRequest = { settings };
    if (this.values.consolePassword) request.consolePassword = this.values.consolePassword;
    if (this.passwordSet) request.currentPassword = this.values.currentPassword ?? "";
    return request;
  }

  /** The supervisor's answer: problems go to their fields, anything else to the status line. */
  answered(ok: boolean, message: string, problems: { key: string; message: string }[] = []): void {
    this.problems.clear();
    for (const p of problems) this.problems.set(p.key, p.message);
    const first = this.visible().findIndex((f) => this.problems.has(f.key));
    if (first >= 0) this.focus = first;
    const elsewhere = problems.filter((p) => !this.visible().some((f) => f.key === p.key));
    this.status = ok
      ? message
      : [message, ...elsewhere.map((p) => `${p.key} ${p.message}`)].filter(Boolean).join("; ");
  }

  lines(width: number): string[] {
    const box = Math.max(16, Math.min(40, width - 24));
    const out = [
      "{bold}SETUP{/bold}",
      "Servers with the same grid name and join token form one grid by themselves: the first",
      "creates it, the others join it. These settings are kept on this server's data partition.",
      "",
    ];
    this.visible().forEach((f, i) => {
      const focused = i === this.focus;
      const raw = this.values[f.key] ?? "";
      let shown: string;
      if (f.kind === "choice")
        shown = (f.choices ?? [])
          .map((c) => (c === raw ? `{bold}< ${c} >{/bold}` : `  ${c}  `))
          .join(" ");
      else {
        const text = f.kind === "secret" ? "*".repeat(raw.length) : raw;
        const visibleText = text.length > box - 1 ? text.slice(text.length - box + 1) : text;
        shown = `[${esc(visibleText.padEnd(box))}]`;
      }
      const label = f.label.padEnd(18);
      out.push(`  ${focused ? `{inverse}${label}{/inverse}` : label}${shown}`);
      const problem = this.problems.get(f.key);
      if (problem)
        out.push(`  ${" ".repeat(18)}{red-fg}^ ${esc(f.label)} ${esc(problem)}{/red-fg}`);
      else if (focused) out.push(`  ${" ".repeat(18)}{cyan-fg}${esc(f.help)}{/cyan-fg}`);
    });
    const button = "[ Save: create or join the grid ]";
    out.push("", `  ${this.onButton ? `{inverse}${button}{/inverse}` : button}`, "");
    if (this.status) out.push(`  ${esc(this.status)}`);
    return out;
  }
}
