import { spawn } from "node:child_process";
import { existsSync, openSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { ReadStream, WriteStream } from "node:tty";
import blessed from "blessed";
import { parseAdminToken } from "../api/index.js";
import type { ControlClient, ControlError, LogEntry } from "../os/index.js";
import { esc, gridScreen, logText, nodeScreen, roleText } from "./screens.js";
import { SetupForm } from "./setup-form.js";
import { type Snapshot, SnapshotReader } from "./snapshot.js";
import { SERIAL_DEFAULT, SizeProbe, setKernelSize, sizeKnown } from "./terminal-size.js";

/**
 * The local console: a full-screen text UI on a terminal (tty1, a serial line, or the
 * terminal it was started from). Three screens: the node, the grid, and any service's log
 * followed live. It only reads: every change an operator makes goes through the
 * supervisor's and the grid service's APIs, like the CLI's.
 */

export interface ConsoleOptions {
  supervisor: ControlClient;
  grid: ControlClient;
  dataDir: string;
  /** A terminal device to open (/dev/tty1, /dev/ttyS0); else this process's stdin/stdout. */
  tty?: string;
  /** Seconds between refreshes. */
  refreshS?: number;
}

const SCREENS = ["node", "grid", "logs", "setup"] as const;
type ScreenName = (typeof SCREENS)[number];
const TITLES: Record<ScreenName, string> = {
  node: "Node",
  grid: "Grid",
  logs: "Logs",
  setup: "Setup",
};
const MAX_LOG_LINES = 5000;

/**
 * The terminfo entry for TERM: the system's, else the copy blessed ships (the node image
 * has no terminfo database; blessed carries linux and xterm), else xterm.
 */
export function terminfoFor(term: string): string {
  const first = term[0] ?? "x";
  const system = ["/etc/terminfo", "/lib/terminfo", "/usr/share/terminfo"].some((d) =>
    existsSync(join(d, first, term)),
  );
  if (system) return term;
  const shipped = join(dirname(createRequire(import.meta.url).resolve("blessed")), "..", "usr");
  return existsSync(join(shipped, term)) ? join(shipped, term) : "xterm";
}

interface Terminal {
  input: ReadStream;
  output: WriteStream;
  /** Reads the terminal's size again; emits resize on the output when it changed. */
  checkSize: () => void;
  /** The descriptor a shell gets as its terminal. */
  fd: number;
}

/** The flatgrid command this console runs in (it is `flatgrid console`): its other commands. */
function cliScript(): string {
  return process.argv[1] ?? "flatgrid";
}

function openTerminal(device: string): Terminal {
  // One descriptor for both, opened read-write: the supervisor starts us in a session of our
  // own, so this also makes it our controlling terminal.
  const fd = openSync(device, "r+");
  const input = new ReadStream(fd);
  const output = new WriteStream(fd);
  // Node tracks the size of its own stdout only. SIGWINCH comes when this is our controlling
  // terminal; a terminal that is some other session's (or a serial line whose size someone
  // set with stty) is asked again at each refresh too.
  // getWindowSize() only returns what Node last read; _refreshSize() asks the kernel again
  // and emits resize when the size changed (what Node does for stdout on SIGWINCH).
  const refresh = (output as unknown as { _refreshSize?: () => void })._refreshSize;
  const handle = (output as unknown as { _handle?: { getWindowSize(size: number[]): number } })
    ._handle;
  const checkSize = () => {
    // 0×0 (a serial line that was never told, or someone's stty) would shrink blessed to one
    // cell: keep the size there is; Ctrl-L asks the terminal (see terminal-size.ts).
    const size = [0, 0];
    if (handle?.getWindowSize(size) === 0 && (!size[0] || !size[1])) return;
    refresh?.call(output);
  };
  process.on("SIGWINCH", checkSize);
  return { input, output, checkSize, fd };
}

export async function runConsole(o: ConsoleOptions): Promise<void> {
  const term = terminfoFor(process.env.TERM || (o.tty ? "linux" : "xterm"));
  const io: Terminal = o.tty
    ? openTerminal(o.tty)
    : { input: process.stdin, output: process.stdout, checkSize: () => {}, fd: 0 };
  // A terminal hung up (a serial line's carrier dropped, a console server's session ended,
  // vhangup): every descriptor on it is dead for good, though the terminal is not. Ending
  // is no failure: the supervisor starts us again, on a fresh open of the device, and the
  // new console draws the whole screen. A keyboard unplugged from a VT changes nothing.
  let hungUp = false;
  const hangUp = (how: string) => {
    if (hungUp) return;
    hungUp = true;
    process.stderr.write(`console: ${o.tty ?? "the terminal"} hung up (${how}); ending\n`);
    process.exit(0);
  };
  io.input.on("error", (err: NodeJS.ErrnoException) => hangUp(`read: ${err.code ?? err.message}`));
  io.output.on("error", (err: NodeJS.ErrnoException) =>
    hangUp(`write: ${err.code ?? err.message}`),
  );
  // A terminal reads end-of-file only once hung up (a key never ends its input).
  if (o.tty) io.input.on("end", () => hangUp("end of input"));
  // A serial line: the kernel does not know its size (see terminal-size.ts).
  const sizeless = o.tty !== undefined && !sizeKnown(io.output);
  // Before blessed reads a key: the terminal's answers must never reach it as keys.
  const probe = sizeless ? new SizeProbe(io.input, (t) => io.output.write(t)) : null;
  if (o.tty && sizeless) {
    try {
      await setKernelSize(o.tty, SERIAL_DEFAULT);
      io.checkSize();
    } catch (err) {
      process.stderr.write(`console: cannot set ${o.tty}'s size: ${(err as Error).message}\n`);
      // Drawn at 80×24 all the same; only programs started on the line see no size.
      io.output.columns = SERIAL_DEFAULT.cols;
      io.output.rows = SERIAL_DEFAULT.rows;
    }
  }
  const screen = blessed.screen({
    // @types/blessed has the two stream types the wrong way round.
    input: io.input as never,
    output: io.output as never,
    terminal: term,
    smartCSR: true,
    fullUnicode: false,
    autoPadding: false,
    title: "flatgrid",
    // The VT has no mouse; a serial terminal may send anything.
    sendFocus: false,
    warnings: false,
  });
  const header = blessed.box({
    parent: screen,
    top: 0,
    left: 0,
    width: "100%",
    height: 1,
    tags: true,
    style: { fg: "white", bg: "blue" },
  });
  const tabs = blessed.box({
    parent: screen,
    top: 1,
    left: 0,
    width: "100%",
    height: 1,
    tags: true,
  });
  const body = blessed.box({
    parent: screen,
    top: 2,
    left: 0,
    width: "100%",
    bottom: 1,
    tags: true,
    wrap: false,
    scrollable: true,
    alwaysScroll: true,
    keys: true,
  });
  const footer = blessed.box({
    parent: screen,
    bottom: 0,
    left: 0,
    width: "100%",
    height: 1,
    tags: true,
    style: { fg: "white", bg: "blue" },
  });

  const reader = new SnapshotReader({
    supervisor: o.supervisor,
    grid: o.grid,
    dataDir: o.dataDir,
  });
  let current: ScreenName = "node";
  let snapshot: Snapshot | null = null;
  let readError: string | null = null;

  // The log screen: one service's log, followed live, optionally filtered by a search.
  const log = {
    service: "grid",
    entries: [] as LogEntry[],
    abort: null as AbortController | null,
    search: "",
    /** Whether the view follows new lines (scrolled to the end). */
    tail: true,
  };
  const serviceNames = () => ["supervisor", ...(snapshot?.services?.map((s) => s.name) ?? [])];

  const follow = (service: string) => {
    log.abort?.abort();
    log.service = service;
    log.entries = [];
    log.tail = true;
    const abort = new AbortController();
    log.abort = abort;
    const pump = async () => {
      while (!abort.signal.aborted) {
        try {
          await o.supervisor.logs(
            service,
            { lines: 500, follow: true, signal: abort.signal },
            (e) => {
              log.entries.push(e);
              if (log.entries.length > MAX_LOG_LINES) log.entries.splice(0, 1000);
              if (current === "logs") scheduleDraw();
            },
          );
        } catch (err) {
          if (abort.signal.aborted) return;
          log.entries.push({
            seq: -1,
            time: Date.now(),
            stream: "supervisor",
            level: 50,
            msg: `console: cannot read the log of ${service}: ${(err as Error).message}`,
          });
          scheduleDraw();
        }
        // The supervisor restarted, or the service is gone: try again, from its last lines.
        await new Promise((r) => setTimeout(r, 2000));
        log.entries = [];
      }
    };
    void pump();
  };

  const logScreen = (): string[] => {
    const needle = log.search.toLowerCase();
    const shown = needle
      ? log.entries.filter((e) => logText(e).toLowerCase().includes(needle))
      : log.entries;
    const head = `{bold}LOG ${esc(log.service)}{/bold}  ${
      needle
        ? `${shown.length} of ${log.entries.length} lines match "${esc(log.search)}"`
        : `${log.entries.length} lines`
    }`;
    const lines = shown.map((e) => {
      const text = logText(e);
      if (!needle) return text;
      // Mark the match; tags make the text longer, so search the escaped line as shown.
      const i = text.toLowerCase().indexOf(needle);
      return i < 0
        ? text
        : `${text.slice(0, i)}{inverse}${text.slice(i, i + needle.length)}{/inverse}${text.slice(i + needle.length)}`;
    });
    return [head, ...lines];
  };

  /** While a shell has the terminal, nothing is drawn. */
  let suspended = false;
  const draw = () => {
    if (suspended) return;
    const width = typeof screen.width === "number" ? screen.width : 80;
    const s = snapshot;
    const time = new Date().toTimeString().slice(0, 8);
    const left = s
      ? ` flatgrid  |  ${esc(s.hostname)}  |  grid ${esc(s.grid?.grid?.name ?? "none")}  |  ${roleText(s)}`
      : " flatgrid  |  reading the node's state...";
    header.setContent(
      `${left}${" ".repeat(Math.max(1, width - left.length - time.length - 1))}${time}`,
    );
    tabs.setContent(
      SCREENS.map((name, i) => {
        const tab = ` F${i + 1} ${TITLES[name]} `;
        return name === current ? `{inverse}${tab}{/inverse}` : tab;
      }).join(" "),
    );
    const keys =
      current === "logs"
        ? " Left/Right: service  /: search  Esc: clear  r: restart it  End: follow"
        : current === "setup"
          ? " Up/Down, Tab: field  Enter: next, save  Space: choose  F1-F3: other screens"
          : current === "node"
            ? " F1-F4, Tab: screens  R: reboot  P: power off  S: shell  Ctrl-L: redraw"
            : " F1-F4, Tab: screens  A: attach to an instance's console  PgUp PgDn: scroll";
    const quitKey = o.tty || current === "setup" ? "" : "  q: quit";
    if (!asking)
      footer.setContent(notice ? ` {yellow-fg}${esc(notice)}{/yellow-fg}` : `${keys}${quitKey}`);
    let lines: string[];
    if (!s) lines = [readError ? `{red-fg}${esc(readError)}{/red-fg}` : "reading..."];
    else if (current === "node") lines = nodeScreen(s, width);
    else if (current === "grid") lines = gridScreen(s);
    else if (current === "setup")
      lines = form ? form.lines(width) : ["reading the node's settings..."];
    else lines = logScreen();
    const scroll = body.getScroll();
    body.setContent(lines.join("\n"));
    if (current === "logs" && log.tail) body.setScrollPerc(100);
    else body.scrollTo(scroll);
    screen.render();
  };
  let drawPending = false;
  // Log lines come in bursts: draw at most every 100 ms.
  const scheduleDraw = () => {
    if (drawPending) return;
    drawPending = true;
    setTimeout(() => {
      drawPending = false;
      draw();
    }, 100);
  };

  // The setup form, made anew from the stored settings each time the screen opens.
  let form: SetupForm | null = null;
  const openForm = async () => {
    form = null;
    const config = snapshot?.node?.config;
    const set = await o.supervisor
      .post<{ set: boolean }>("/v1/console/check-password", { password: "" })
      .then((r) => r.set)
      .catch(() => false);
    form = new SetupForm(
      {
        "flatgrid.grid": config?.grid ?? "",
        "flatgrid.net": config?.net ?? "dhcp",
        "flatgrid.ip": config?.ip ?? "",
        "flatgrid.gateway": config?.gateway ?? "",
        "flatgrid.dns": config?.dns.join(",") ?? "",
      },
      set,
    );
    draw();
  };
  const save = async (f: SetupForm) => {
    try {
      const r = await o.supervisor.put<{
        file: string;
        restarted: string[];
        notes: string[];
        config: { grid: string | null };
      }>("/v1/node/settings", f.request());
      f.answered(
        true,
        [
          `Saved in ${r.file}.`,
          r.restarted.includes("grid")
            ? `The grid service restarted: this server now creates or joins grid ${r.config.grid}.`
            : "",
          ...r.notes.map((n) => `${n[0]?.toUpperCase()}${n.slice(1)}.`),
        ]
          .filter(Boolean)
          .join(" "),
      );
      draw();
      await refresh();
    } catch (err) {
      const e = err as ControlError;
      f.answered(false, e.message, e.problems ?? []);
      draw();
    }
  };

  const show = (name: ScreenName) => {
    if (name !== current) body.scrollTo(0);
    current = name;
    if (name === "logs" && !log.abort) follow(log.service);
    if (name === "setup") void openForm();
    // The grid screen's applications are read only for it: read them now.
    if (name === "grid" && snapshot?.apps === null) void refresh();
    draw();
  };
  /** Keys that would be text in a form or a search go there, not to the screens. */
  const typing = () => asking || current === "setup";

  // A one-line question in the footer: the log search, and the console password.
  let asking = false;
  const answer = blessed.textbox({
    parent: footer,
    top: 0,
    height: 1,
    inputOnFocus: false,
    style: { fg: "white", bg: "blue" },
  });
  answer.hide();
  /** The answer typed, or null for Esc. */
  const ask = (question: string, initial: string, censor: boolean) =>
    new Promise<string | null>((resolve) => {
      asking = true;
      footer.setContent(question);
      answer.left = question.length;
      answer.width = Math.max(
        8,
        (typeof screen.width === "number" ? screen.width : 80) - question.length,
      );
      (answer as unknown as { censor: boolean }).censor = censor;
      answer.setValue(initial);
      answer.show();
      screen.render();
      answer.readInput((_err, value) => {
        asking = false;
        answer.hide();
        body.focus();
        resolve(typeof value === "string" ? value : null);
      });
    });
  const startSearch = async () => {
    const value = await ask(" search: ", log.search, false);
    if (value !== null) log.search = value;
    log.tail = true;
    draw();
  };

  // Actions that change the node: each asks for the console password first.
  let notice = "";
  const say = (text: string) => {
    notice = text;
    draw();
    setTimeout(() => {
      if (notice === text) {
        notice = "";
        draw();
      }
    }, 5000);
  };
  const withPassword = async (what: string, action: () => Promise<string | undefined>) => {
    if (typing()) return;
    const password = await ask(` ${what}? Password or admin token (Esc: no): `, "", true);
    if (password === null) return say(`${what}: not done`);
    try {
      if (parseAdminToken(password)) {
        // The grid's admin token: the grid service knows it (with quorum).
        const r = await o.grid.post<{ valid: boolean }>("/v1/tokens/verify", { token: password });
        if (!r.valid) return say(`${what}: not an admin token of this grid, nothing done`);
      } else {
        const r = await o.supervisor.post<{ set: boolean; ok: boolean }>(
          "/v1/console/check-password",
          { password },
        );
        if (!r.set)
          return say(
            `${what}: no console password is set yet (F4 Setup sets one), and that is no admin token`,
          );
        if (!r.ok) return say(`${what}: wrong password, nothing done`);
      }
      const done = await action();
      if (done) say(done);
    } catch (err) {
      say(`${what}: ${(err as Error).message}`);
    }
  };
  const power = (action: "reboot" | "poweroff") =>
    withPassword(action === "reboot" ? "Reboot this server" : "Power this server off", async () => {
      await o.supervisor.post(`/v1/power/${action}`);
      return `${action}: the services stop in order, then the server ${action === "reboot" ? "reboots" : "powers off"}`;
    });
  /** Runs a program on this terminal, the console put aside; it comes back when that exits. */
  const onTerminal = async (banner: string, file: string, args: string[]) => {
    const program = screen.program;
    suspended = true;
    program.normalBuffer();
    program.clear();
    program.showCursor();
    // blessed buffers what it writes until the next tick: out before the program's own.
    (program as unknown as { flush(): void }).flush();
    const raw = io.input.isRaw;
    io.input.setRawMode(false);
    io.input.pause();
    // pause() alone keeps reading into the stream's buffer, which would take the program's
    // keys: stop reading the terminal until it is done.
    const handle = (io.input as unknown as { _handle?: { readStop(): void; readStart(): void } })
      ._handle;
    handle?.readStop();
    io.output.write(`flatgrid console: ${banner}\r\n`);
    await new Promise<void>((resolve) => {
      const child = spawn(file, args, {
        stdio: [io.fd, io.fd === 0 ? 1 : io.fd, io.fd === 0 ? 2 : io.fd],
        env: { ...process.env, TERM: process.env.TERM ?? "linux" },
      });
      child.on("exit", () => resolve());
      child.on("error", (err) => {
        io.output.write(`flatgrid console: cannot start ${file}: ${err.message}\r\n`);
        resolve();
      });
    });
    handle?.readStart();
    io.input.setRawMode(raw);
    io.input.resume();
    program.alternateBuffer();
    program.hideCursor();
    suspended = false;
    screen.realloc();
    draw();
  };
  /** A root shell on this terminal; the console comes back when it exits. */
  const shell = () =>
    withPassword("Open a root shell", async () => {
      const sh = existsSync("/bin/bash") ? "/bin/bash" : "/bin/sh";
      await onTerminal("a root shell; exit returns to the console", sh, ["-i"]);
      return "the shell exited";
    });
  /** An instance's serial console (`flatgrid app console`), from whichever node runs it. */
  const attachInstance = async () => {
    if (typing()) return;
    const which = await ask(
      " Attach to the console of (APP/INSTANCE, e.g. shop/db.0): ",
      "",
      false,
    );
    if (!which) return;
    const m = /^([a-z][a-z0-9-]{0,31})\/([a-z][a-z0-9-]{0,31}\.\d{1,5})$/.exec(which.trim());
    if (!m) return say(`${which.trim()}: not APP/INSTANCE, like shop/db.0`);
    const [, app = "", instance = ""] = m;
    await withPassword(`Attach to ${app}/${instance}`, async () => {
      await onTerminal(
        `${app}/${instance}'s serial console; Ctrl-] returns to the console`,
        process.execPath,
        [cliScript(), "app", "console", app, instance, `--grid-socket=${o.grid.path}`],
      );
      return `${app}/${instance}: detached`;
    });
  };

  SCREENS.forEach((name, i) => {
    screen.key([`f${i + 1}`], () => !asking && show(name));
    screen.key([`${i + 1}`], () => !typing() && show(name));
  });
  screen.on("keypress", (ch: string | undefined, key: { name?: string; shift?: boolean }) => {
    if (current !== "setup" || !form || /^f\d+$/.test(key.name ?? "")) return;
    if (form.key(ch, key.name, key.shift) === "submit") void save(form);
    draw();
  });
  screen.key(["tab"], () => {
    if (typing()) return;
    show(SCREENS[(SCREENS.indexOf(current) + 1) % SCREENS.length] ?? "node");
  });
  screen.key(["S-tab"], () => {
    if (typing()) return;
    show(SCREENS[(SCREENS.indexOf(current) + SCREENS.length - 1) % SCREENS.length] ?? "node");
  });
  screen.key(["left", "right"], (_ch, key) => {
    if (asking || current !== "logs") return;
    const names = serviceNames();
    const i = names.indexOf(log.service);
    const next = names[(i + (key.name === "right" ? 1 : names.length - 1)) % names.length];
    if (next) follow(next);
    draw();
  });
  screen.key(["S-r"], () => current === "node" && power("reboot"));
  screen.key(["S-p"], () => current === "node" && power("poweroff"));
  screen.key(["S-s"], () => current === "node" && shell());
  screen.key(["S-a"], () => current === "grid" && attachInstance());
  screen.key(["r"], () => {
    if (current !== "logs") return;
    const name = log.service;
    if (name === "supervisor") return say("the supervisor itself is not restarted from here");
    withPassword(`Restart ${name}`, async () => {
      await o.supervisor.post(`/v1/services/${encodeURIComponent(name)}/restart`);
      return `${name}: restarted`;
    });
  });
  screen.key(["/"], () => {
    if (!asking && current === "logs") void startSearch();
  });
  screen.key(["escape"], () => {
    if (asking || current !== "logs") return;
    log.search = "";
    draw();
  });
  screen.key(["up", "down", "pageup", "pagedown", "home"], (_ch, key) => {
    if (typing()) return;
    const page = Math.max(1, (typeof body.height === "number" ? body.height : 20) - 1);
    const by = { up: -1, down: 1, pageup: -page, pagedown: page, home: -1e9 }[
      key.name as "up" | "down" | "pageup" | "pagedown" | "home"
    ];
    body.scroll(by);
    log.tail = body.getScrollPerc() >= 100;
    screen.render();
  });
  screen.key(["end", "S-g"], () => {
    if (typing()) return;
    log.tail = true;
    body.setScrollPerc(100);
    screen.render();
  });
  /** On a serial line, asks the terminal at the other end for its size and takes it. */
  const fitToTerminal = async () => {
    if (!o.tty || !probe) return;
    const size = await probe.ask();
    // Set even when it is the size drawn at: the line's own may have been lost (an stty).
    if (!size) return;
    try {
      await setKernelSize(o.tty, size);
      // Emits resize, which draws every cell at the new size.
      io.checkSize();
    } catch (err) {
      process.stderr.write(`console: cannot set ${o.tty}'s size: ${(err as Error).message}\n`);
    }
  };
  // Ctrl-L, as in every full-screen program: whoever just attached to a serial line sees
  // only what changes from now on, unless the whole screen is drawn again.
  screen.key(["C-l"], async () => {
    await fitToTerminal();
    screen.realloc();
    draw();
  });
  const quit = new Promise<void>((resolve) => {
    // On a node's own terminal there is nothing to quit to: the console is the screen.
    if (!o.tty)
      screen.key(["q", "C-c"], (_ch, key) => {
        if (typing() && key.name === "q") return;
        resolve();
      });
  });
  // Every cell again: the terminal may have cropped or reflowed what was there, and blessed
  // would otherwise only write the cells it believes changed.
  screen.on("resize", () => {
    screen.realloc();
    draw();
  });

  const refresh = async () => {
    io.checkSize();
    try {
      snapshot = await reader.read({ apps: current === "grid" });
      readError = null;
    } catch (err) {
      readError = `cannot read the node's state: ${(err as Error).message}`;
    }
    draw();
  };
  body.focus();
  draw();
  void fitToTerminal();
  await refresh();
  // A server that belongs to no grid yet opens on the setup form: that is what it needs.
  if (snapshot && (snapshot as Snapshot).node?.config.grid === null) show("setup");
  // Every 2 s while someone is at the keyboard; every 10 s once nobody has pressed a key
  // for 30 s: each refresh asks the supervisor and the grid service, which on a busy (or
  // emulated) server is time taken from them. A key brings the fast pace back at once.
  let lastKey = Date.now();
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let stopped = false;
  const tick = () => {
    timer = undefined;
    running = true;
    void refresh().finally(() => {
      running = false;
      next();
    });
  };
  const next = () => {
    if (stopped || running || timer) return;
    const idle = Date.now() - lastKey > 30_000;
    timer = setTimeout(tick, (idle ? 10 : (o.refreshS ?? 2)) * 1000);
  };
  screen.on("keypress", () => {
    const wasIdle = Date.now() - lastKey > 30_000;
    lastKey = Date.now();
    if (wasIdle && timer && !suspended) {
      clearTimeout(timer);
      tick();
    }
  });
  next();
  await quit;
  stopped = true;
  clearTimeout(timer);
  log.abort?.abort();
  screen.destroy();
}
