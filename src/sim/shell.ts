import { randomBytes } from "node:crypto";
import { connect, type Socket } from "node:net";
import { SimError } from "./errors.js";
import type { QemuServer } from "./qemu.js";
import { unwedge } from "./wedge.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A node's debug shell (flatgrid.debugshell=ttyS1), reached through QEMU's second serial
 * port. Input goes a byte at a time: the emulated UART has a 16-byte FIFO and no flow
 * control. busybox asks the terminal for its cursor position; we answer so that the reply
 * is not mistaken for typed input. QEMU serves one client per port: while someone else is
 * attached, open() connects but the shell never answers, and run() times out.
 */
/** How often a wait that goes on looks at the node's vCPUs (see WEDGED). */
const WEDGE_LOOK_MS = 15_000;

/** What busybox sh -i prints as it starts. */
const RESTART_BANNER = /built-in shell \(ash\)/;

export class NodeShell {
  private socket: Socket | null = null;
  /** Everything the shell printed since open(), carriage returns included. */
  output = "";

  constructor(
    private readonly path: string,
    /**
     * With the node's QMP socket, a wait that goes on looks at the node's vCPUs; a wedge
     * (WEDGED) is nudged through the console socket, and one that stays fails the wait.
     */
    private readonly options: { qmpSocket?: string; consoleSocket?: string } = {},
  ) {}

  /** The debug shell of a simulated node, watched for wedges. */
  static forNode(qemu: Pick<QemuServer, "shellSocket" | "qmpSocket" | "consoleSocket">): NodeShell {
    return new NodeShell(qemu.shellSocket, {
      qmpSocket: qemu.qmpSocket,
      consoleSocket: qemu.consoleSocket,
    });
  }

  async open(settleMs = 1500): Promise<void> {
    this.socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(this.path);
      s.once("connect", () => resolve(s));
      s.once("error", (err) =>
        reject(
          new SimError(`cannot reach the debug shell at ${this.path}: ${err.message}`, "shell"),
        ),
      );
    });
    this.socket.on("error", () => this.close());
    this.socket.on("data", (d: Buffer) => {
      const text = d.toString("latin1");
      if (text.includes("\x1b[6n")) this.socket?.write("\x1b[1;1R");
      this.output += text;
    });
    // Ctrl-U drops whatever a previous client left half typed.
    this.socket.write("\x15");
    await sleep(settleMs);
  }

  private async type(text: string): Promise<void> {
    if (!this.socket || this.socket.destroyed)
      throw new SimError(`the debug shell at ${this.path} is not open`, "shell");
    for (const ch of text) {
      this.socket.write(ch);
      await sleep(5);
    }
  }

  /** Types `command` and waits until what follows matches `until`; returns that output. */
  async run(command: string, until: RegExp, timeoutMs: number): Promise<string> {
    const from = this.output.length;
    await this.type(`${command}\n`);
    const deadline = Date.now() + timeoutMs;
    let nextLook = Date.now() + WEDGE_LOOK_MS;
    let lastWedged = "";
    for (;;) {
      const out = this.output.slice(from);
      if (until.test(out)) return out;
      // A node that has not answered for a while may be wedged: nudged, it mostly goes on;
      // still wedged the same way at two looks in a row, it is given up.
      const { qmpSocket, consoleSocket } = this.options;
      if (qmpSocket && Date.now() > nextLook) {
        const { still } = await unwedge({ qmpSocket, consoleSocket });
        nextLook = Date.now() + WEDGE_LOOK_MS;
        if (still && still === lastWedged)
          throw new SimError(`the node is wedged while running "${command}": ${still}`, "wedged");
        lastWedged = still;
      }
      if (Date.now() > deadline)
        throw new SimError(
          `no ${until} within ${timeoutMs / 1000} s after "${command}"; the shell says:\n${out.slice(-3000)}`,
          "shell",
        );
      await sleep(250);
    }
  }

  /**
   * Runs `command` and returns just its output (newlines as \n) and exit status. Markers
   * around it are typed with quotes inside, so the shell's echo of the typed line never
   * matches them; only what echo prints does.
   */
  async exec(command: string, timeoutMs: number): Promise<{ output: string; status: number }> {
    const tag = randomBytes(4).toString("hex");
    const begin = `FG${tag}B`;
    const end = `FG${tag}E`;
    const typed = `echo FG"${tag}B"; ${command}; echo FG"${tag}E"$?`;
    const pattern = new RegExp(`${begin}\\r?\\n([\\s\\S]*?)${end}(\\d+)`);
    // The supervisor restarts a debug shell that died; what was typed meanwhile is lost.
    // A command that never began (no begin marker) is typed again, once the new shell is up.
    const restarted = new RegExp(`${RESTART_BANNER.source}[\\s\\S]*\\n[^\\n]*# `);
    for (let attempt = 1; ; attempt++) {
      const out = await this.run(
        typed,
        new RegExp(`${pattern.source}|${restarted.source}`),
        timeoutMs,
      );
      const m = pattern.exec(out);
      if (m) return { output: (m[1] ?? "").replace(/\r/g, ""), status: Number(m[2] ?? -1) };
      if (out.includes(begin))
        throw new SimError(`the debug shell restarted while running "${command}"`, "shell");
      if (attempt >= 3)
        throw new SimError(
          `the debug shell keeps restarting; it says:\n${out.slice(-2000)}`,
          "shell",
        );
      this.socket?.write("\x15");
      await sleep(1000);
    }
  }

  close(): void {
    this.socket?.destroy();
    this.socket = null;
  }
}
