import { chmodSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { dirname } from "node:path";
import { loadVmConfig } from "./config.js";
import { VirtioNet } from "./devices/virtio-net.js";
import { VirtioVsock } from "./devices/virtio-vsock.js";
import { FENCED_EXIT } from "./process-contract.js";
import { type BootProtocol, Vm, type VmEnd } from "./vm.js";

/**
 * `flatgrid vmm --config vm.json --socket PATH`: one VM in this process. The guest console
 * goes to stdout; the control socket (HTTP over a Unix socket, mode 0600) takes:
 *   GET  /v1/vm                       state and stats (exits by reason, vCPU time, RSS)
 *   POST /v1/vm/{start,pause,resume,stop}
 *   GET  /v1/console                  the console kept so far; ?follow=1 keeps streaming
 *                                     what the guest writes until the client goes or the
 *                                     VM ends (attach: `flatgrid vmm-console`)
 *   POST /v1/console                  bytes typed at the console (the body, at most 4 KiB)
 * The process exits when the VM ends: 0 for a guest reset, power-off or a requested stop,
 * 1 for an error.
 */

/** Typing, not file transfer: a real UART's receive FIFO holds far less anyway. */
const CONSOLE_INPUT_MAX = 4096;

export interface VmmOptions {
  config: string;
  socket?: string;
  /** Create the VM but wait for POST /v1/vm/start. */
  waitStart?: boolean;
  /** Copy the guest console to stdout. */
  console?: boolean;
  /**
   * Fencing: the VM stops once `file` is older than `maxAgeMs`. The agent touches it while
   * its node reaches the grid; a node cut off, or an agent that hangs, stops renewing it, so
   * its VMs stop before the controller places them elsewhere: no instance runs twice.
   */
  lease?: { file: string; maxAgeMs: number };
}

/** How old the lease file is, ms; Infinity when it is missing. */
function leaseAge(file: string): number {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** Resident memory of the VMM process, and the part of it that is guest RAM. */
function memoryUse(vm: Vm): { rssMiB: number; guestRssMiB: number; vmmRssMiB: number } {
  let rssKiB = 0;
  let guestKiB = 0;
  try {
    rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? 0);
    const starts = new Set(vm.memory.regions.map((r) => r.hostAddress.toString(16)));
    let inGuest = false;
    for (const line of readFileSync("/proc/self/smaps", "utf8").split("\n")) {
      const range = /^([0-9a-f]+)-[0-9a-f]+ /.exec(line);
      if (range) inGuest = starts.has(range[1] ?? "");
      else if (inGuest && line.startsWith("Rss:")) guestKiB += Number(/(\d+)/.exec(line)?.[1] ?? 0);
    }
  } catch {
    // Not on Linux /proc: leave zeros.
  }
  const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;
  return { rssMiB: mib(rssKiB), guestRssMiB: mib(guestKiB), vmmRssMiB: mib(rssKiB - guestKiB) };
}

const BOOT_PROTOCOLS: Record<BootProtocol, string> = {
  bzimage: "a bzImage, entered through the Linux 64-bit boot protocol",
  pvh: "an ELF kernel with a PVH entry, entered there (no decompression)",
  elf64: "an ELF kernel without a PVH entry, entered at its 64-bit entry with a zero page",
};

export async function runVmm(options: VmmOptions): Promise<number> {
  const config = loadVmConfig(options.config);
  const vm = new Vm(config);
  if (options.console !== false) vm.on("console", (bytes: Buffer) => process.stdout.write(bytes));
  vm.on("device-error", (message: string) => process.stderr.write(`flatgrid vmm: ${message}\n`));
  vm.on("boot", (protocol: BootProtocol) =>
    process.stderr.write(`flatgrid vmm: ${config.kernel}: ${BOOT_PROTOCOLS[protocol]}\n`),
  );
  // Which data paths this VM got: the kernel's (vhost) or this process's.
  for (const { device } of vm.virtio) {
    if (device instanceof VirtioNet) {
      process.stderr.write(`flatgrid vmm: ${device.name}: frames moved by ${device.dataPath}\n`);
      if (device.madeTap)
        process.stderr.write(
          `flatgrid vmm: ${device.name}: there was no such tap, so this VMM made one; it is on no bridge (ip link set ${device.name.replace(/^net /, "")} master BRIDGE up) and goes away with the VM\n`,
        );
    }
    if (device instanceof VirtioVsock)
      process.stderr.write(
        `flatgrid vmm: vsock: guest context id ${device.cid}, through vhost-vsock\n`,
      );
  }
  let server: Server | null = null;
  if (options.socket) {
    const path = options.socket;
    mkdirSync(dirname(path), { recursive: true });
    rmSync(path, { force: true });
    server = createServer((req: IncomingMessage, res: ServerResponse) => {
      void handle(req, res).catch((err: Error) =>
        send(res, 500, { error: { code: "internal", message: err.message } }),
      );
    });
    const handle = async (req: IncomingMessage, res: ServerResponse) => {
      const route = `${req.method} ${new URL(req.url ?? "/", "http://vmm").pathname}`;
      switch (route) {
        case "GET /v1/vm":
          await vm.refreshCpuTimes();
          return send(res, 200, { state: vm.state, stats: vm.stats(), memory: memoryUse(vm) });
        case "POST /v1/vm/start":
          vm.start();
          return send(res, 200, { state: vm.state });
        case "POST /v1/vm/pause":
          await vm.pause();
          return send(res, 200, { state: vm.state });
        case "POST /v1/vm/resume":
          vm.resume();
          return send(res, 200, { state: vm.state });
        case "POST /v1/vm/stop": {
          send(res, 202, { state: "stopping" });
          await vm.stop();
          return;
        }
        case "GET /v1/console": {
          const follow = new URL(req.url ?? "/", "http://vmm").searchParams.get("follow") === "1";
          res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
          if (!follow) {
            res.end(vm.console.text());
            return;
          }
          res.write(vm.console.text());
          const forward = (bytes: Buffer) => res.write(bytes);
          const done = () => {
            vm.off("console", forward);
            res.end();
          };
          vm.on("console", forward);
          res.once("close", () => vm.off("console", forward));
          void vm.ended.then(done);
          return;
        }
        case "POST /v1/console": {
          const chunks: Buffer[] = [];
          let size = 0;
          for await (const chunk of req) {
            size += (chunk as Buffer).length;
            if (size > CONSOLE_INPUT_MAX)
              return send(res, 413, {
                error: {
                  code: "too-large",
                  message: `console input over ${CONSOLE_INPUT_MAX} bytes`,
                },
              });
            chunks.push(chunk as Buffer);
          }
          vm.serial.queueInput(Buffer.concat(chunks));
          return send(res, 202, { queued: size });
        }
        default:
          return send(res, 404, {
            error: { code: "not-found", message: `no such endpoint: ${route}` },
          });
      }
    };
    const mask = process.umask(0o177);
    await new Promise<void>((resolve, reject) => {
      server?.once("error", reject);
      server?.listen(path, resolve);
    }).finally(() => process.umask(mask));
    chmodSync(path, 0o600);
  }
  process.once("SIGTERM", () => void vm.stop());
  process.once("SIGINT", () => void vm.stop());
  let leaseTimer: NodeJS.Timeout | null = null;
  let fenced = false;
  if (options.lease) {
    const { file, maxAgeMs } = options.lease;
    // Checked from the start: a VM whose node has no lease must not run even briefly.
    const check = () => {
      const age = leaseAge(file);
      if (age <= maxAgeMs || fenced) return;
      fenced = true;
      process.stderr.write(
        `flatgrid vmm: fenced: the node's lease ${file} ${age === Number.POSITIVE_INFINITY ? "is missing" : `was last renewed ${Math.round(age)} ms ago`} (at most ${maxAgeMs} ms): stopping the VM\n`,
      );
      void vm.stop();
    };
    check();
    leaseTimer = setInterval(check, Math.max(50, Math.min(1000, Math.floor(maxAgeMs / 4))));
  }
  if (!options.waitStart && !fenced) vm.start();
  const end: VmEnd = await vm.ended;
  if (leaseTimer) clearInterval(leaseTimer);
  server?.close();
  if (options.socket) rmSync(options.socket, { force: true });
  process.stderr.write(
    `flatgrid vmm: VM ended: ${end.reason}${end.reason === "error" ? `: ${end.message}` : ""}${"detail" in end && end.detail ? ` (${end.detail})` : ""}\n`,
  );
  // Fenced is neither the guest's doing nor an error: the agent tells it apart by the code.
  if (fenced) return FENCED_EXIT;
  return end.reason === "error" ? 1 : 0;
}
