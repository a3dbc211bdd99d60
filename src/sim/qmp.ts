import { connect } from "node:net";
import { SimError } from "./errors.js";

/**
 * One QMP command on a QEMU monitor socket: greeting, qmp_capabilities, the command, its
 * return. QMP takes one client at a time, so the connection is closed right after.
 */
export function qmp<T>(
  socket: string,
  execute: string,
  timeoutMs = 5000,
  args?: Record<string, unknown>,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const conn = connect(socket);
    let buffer = "";
    let step = 0;
    const fail = (why: string) => {
      conn.destroy();
      reject(new SimError(`QMP ${execute} on ${socket}: ${why}`, "qemu"));
    };
    const timer = setTimeout(() => fail(`no answer in ${timeoutMs} ms`), timeoutMs);
    conn.on("error", (err) => {
      clearTimeout(timer);
      fail(err.message);
    });
    conn.on("data", (d: Buffer) => {
      buffer += d.toString("utf8");
      for (let nl = buffer.indexOf("\n"); nl >= 0; nl = buffer.indexOf("\n")) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: unknown };
        if (msg.error) {
          clearTimeout(timer);
          fail(JSON.stringify(msg.error));
          return;
        }
        if (step === 0 && msg.QMP) {
          step = 1;
          conn.write(`${JSON.stringify({ execute: "qmp_capabilities" })}\n`);
        } else if (step === 1 && "return" in msg) {
          step = 2;
          conn.write(`${JSON.stringify(args ? { execute, arguments: args } : { execute })}\n`);
        } else if (step === 2 && "return" in msg) {
          clearTimeout(timer);
          conn.end();
          resolve(msg.return as T);
        }
        // Anything else is an asynchronous event: not ours to handle.
      }
    });
  });
}

/**
 * Where each vCPU of a QEMU machine is, one line per vCPU (instruction pointer, flags,
 * privilege level, halted or not), from the monitor's `info registers -a`: what to look at
 * when a simulated node stops answering. Two samples a second apart tell a vCPU that loops
 * on one instruction from one that runs.
 */
export async function vcpuLines(socket: string, timeoutMs = 5000): Promise<string[]> {
  const monitor = (command: string) =>
    qmp<string>(socket, "human-monitor-command", timeoutMs, { "command-line": command });
  const lines = vcpuSummary(await monitor("info registers -a"));
  // Each vCPU's local APIC (APIC id = vCPU index here): a halted vCPU with an interrupt it
  // should take is a wedge, not a quiet node.
  return Promise.all(
    lines.map(async (line, cpu) => {
      const apic = lapicSummary(await monitor(`info lapic ${cpu}`).catch(() => ""));
      if (!apic) return line;
      const wedged = /interrupts on halted/.test(line) && apic.deliverable.length > 0;
      return `${line}, APIC: ${apic.text}${wedged ? `: ${WEDGED}` : ""}`;
    }),
  );
}

/**
 * Seen on the simulator's nodes (1 in some tens of nested VM starts on a 1-vCPU node): the node's
 * vCPU halted, interrupts on, its timer vector pending, and QEMU does not deliver it (an
 * injected NMI is not taken either, which points at the SVM global interrupt flag that QEMU
 * 7.2's TCG emulation of nested SVM left clear). Nothing on the node runs meanwhile. Some
 * nodes never came back; on 2026-11-29 one went on by itself after 165 s, and again after
 * 20 s (with kvm_amd's virtual GIF off as with it on). It is a lost wakeup: any new
 * interrupt, such as a byte on the node's serial console, delivers both (unwedge, wedge.ts).
 */
export const WEDGED =
  "wedged: QEMU does not deliver the pending interrupt to the halted vCPU (a fault of QEMU 7.2's software emulation of nested SVM); nothing on the node runs until another interrupt comes, such as a byte on its console (unwedge)";

/**
 * The interrupt state of `info lapic` output: vectors requested (IRR) and in service (ISR),
 * the processor priority, and the requested vectors that priority lets through. Pure.
 */
export function lapicSummary(
  text: string,
): { irr: number[]; isr: number[]; ppr: number; deliverable: number[]; text: string } | null {
  const vectors = (name: string) => {
    const m = new RegExp(`^${name}\\s+(.*)$`, "m").exec(text);
    if (!m) return null;
    return (m[1] ?? "")
      .split(/\s+/)
      .map((v) => Number.parseInt(v, 10))
      .filter((v) => Number.isInteger(v));
  };
  const irr = vectors("IRR");
  const isr = vectors("ISR");
  const ppr = /PPR 0x([0-9a-f]+)/i.exec(text);
  if (!irr || !isr || !ppr) return null;
  const priority = Number.parseInt(ppr[1] ?? "0", 16);
  // A vector is taken when its priority class is above the processor's, and above any in service.
  const highestInService = Math.max(-1, ...isr);
  const deliverable = irr.filter((v) => v >> 4 > priority >> 4 && v >> 4 > highestInService >> 4);
  const list = (v: number[]) => (v.length ? v.join(" ") : "none");
  return {
    irr,
    isr,
    ppr: priority,
    deliverable,
    text: `IRR ${list(irr)}, ISR ${list(isr)}, PPR 0x${priority.toString(16)}`,
  };
}

/** The summary lines of `info registers -a` output. Pure. */
export function vcpuSummary(text: string): string[] {
  const lines: string[] = [];
  for (const block of text.split(/^(?=CPU#\d+)/m)) {
    const cpu = /^CPU#(\d+)/.exec(block)?.[1];
    const rip = /RIP=(\S+) RFL=(\S+) \[([^\]]*)\] CPL=(\d) .*HLT=(\d)/.exec(block);
    if (cpu === undefined || !rip) continue;
    const cr3 = /CR3=(\S+)/.exec(block)?.[1] ?? "?";
    const interrupts = (Number.parseInt(rip[2] ?? "0", 16) & 0x200) !== 0;
    lines.push(
      `vCPU ${cpu}: RIP ${rip[1]} CPL ${rip[4]} interrupts ${interrupts ? "on" : "off"}${rip[5] === "1" ? " halted" : ""} CR3 ${cr3}`,
    );
  }
  return lines;
}
