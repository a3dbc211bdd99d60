import { EventEmitter } from "node:events";
import { closeSync, openSync, readFileSync, readSync } from "node:fs";
import { Worker } from "node:worker_threads";
import {
  close,
  EFD_NONBLOCK,
  eventfd,
  IrqEdge,
  KVM_CAP_TSC_DEADLINE_TIMER,
  KVM_EXIT_FAIL_ENTRY,
  KVM_EXIT_HLT,
  KVM_EXIT_INTERNAL_ERROR,
  KVM_EXIT_IO,
  KVM_EXIT_IO_OUT,
  KVM_EXIT_MMIO,
  KVM_EXIT_SHUTDOWN,
  KVM_EXIT_SYSTEM_EVENT,
  KVM_IOEVENTFD_FLAG_DATAMATCH,
  Kvm,
  layouts,
  pthreadKill,
  readRaw,
  Struct,
  VcpuFd,
  VIRTIO_MMIO_QUEUE_NOTIFY,
  type VmFd,
} from "../kvm/index.js";
import { type AcpiPlatform, writeAcpiTables } from "./boot/acpi.js";
import { loadElf } from "./boot/elf.js";
import { fileBytes, isBzImage } from "./boot/image-bytes.js";
import { loadBzImage, writeVmlinuxZeroPage } from "./boot/linux.js";
import {
  enterLongMode,
  enterPvh,
  setupBootState,
  setupLapic,
  writeBootTables,
  ZERO_PAGE_ADDRESS,
} from "./boot/long-mode.js";
import { writePvhStartInfo } from "./boot/pvh.js";
import { Bus } from "./bus.js";
import { normaliseCpuid } from "./cpuid.js";
import { BootTimer } from "./devices/boot-timer.js";
import { DebugExit } from "./devices/debug-exit.js";
import { I8042 } from "./devices/i8042.js";
import { Serial } from "./devices/serial.js";
import { SerialShared } from "./devices/serial-shared.js";
import { type BlockOptions, VirtioBlock } from "./devices/virtio-blk.js";
import { type NicOptions, VirtioNet } from "./devices/virtio-net.js";
import { VirtioRng } from "./devices/virtio-rng.js";
import { VirtioVsock, type VsockOptions } from "./devices/virtio-vsock.js";
import { FdWatcher } from "./fd-watcher.js";
import { GuestMemory } from "./guest-memory.js";
import { RingText } from "./ring-text.js";
import {
  CTL_FAST_MMIO,
  CTL_FAST_PIO,
  CTL_RESULT,
  CTL_STATE,
  CTL_WORDS,
  STATE_EXITED,
  STATE_GONE,
  STATE_RUNNING,
  STATE_STOP,
} from "./vcpu-control.js";
import { InterruptStatusTable } from "./virtio/interrupt-status.js";
import { MmioTransport, type VirtioDevice } from "./virtio/mmio-transport.js";
import { QueueThread, type QueueThreadDeviceOptions } from "./virtio/queue-thread.js";
import { SMALL_YOUNG_GENERATION } from "./worker-limits.js";

/** Where the in-kernel irqchip wants its TSS and identity map (below the 4 GiB BIOS area). */
const TSS_ADDRESS = 0xfffb_d000;
const IDENTITY_MAP_ADDRESS = 0xfffb_c000;
const COM1 = 0x3f8;
const COM1_IRQ = 4;
const I8042_BASE = 0x60;
const BOOT_TIMER_PORT = 0x3f0;
const DEBUG_EXIT_PORT = 0x3f1;
/** Test guests find their RAM size and vCPU count here (see native/testguest/README.md). */
const TESTGUEST_RAM_SIZE_ADDRESS = 0x6ff8;
const TESTGUEST_CPU_COUNT_ADDRESS = 0x6ff0;
/** virtio-mmio devices: 4 KiB windows from here, interrupts from VIRTIO_IRQ_BASE (as Firecracker). */
export const VIRTIO_MMIO_BASE = 0xd000_0000;
export const VIRTIO_MMIO_SIZE = 0x1000;
const VIRTIO_IRQ_BASE = 5;
const MAX_VIRTIO_DEVICES = 8;
const EINTR = 4;
const EAGAIN = 11;
/**
 * How long the console's bytes from the vCPU threads collect before the main thread passes
 * them on. Each wake of the main thread went through the fd watcher's poll thread and the
 * event loop; for every byte, it made a console flush of a Debian kernel's boot messages
 * (77 lines) take 14.7 s on the simulator's nested KVM. A typed character's echo waits this
 * much longer, which nobody sees.
 */
const CONSOLE_BATCH_MS = 10;
/** SIGUSR2: the signal that kicks a vCPU thread out of KVM_RUN. */
const KICK_SIGNAL = 12;

export interface VmConfig {
  memoryMiB: number;
  vcpus: number;
  /** A bzImage (Linux 64-bit boot protocol) or a static ELF64 image entered in long mode. */
  kernel: string;
  /** Extra kernel command line, after the console and device options the VMM sets. */
  cmdline?: string;
  initrd?: string;
  /** Attach the test guests' result port. */
  debugExit?: boolean;
  /** virtio-blk disks, in order: the first is /dev/vda in a Linux guest. */
  disks?: BlockOptions[];
  /** virtio-net devices, each on a host tap. */
  nics?: NicOptions[];
  /** A virtio-rng device (on by default: guests need entropy early). */
  rng?: boolean;
  /** A virtio-vsock device served by the host's vhost-vsock: the host-guest channel. */
  vsock?: VsockOptions;
  hugepages?: boolean;
}

export type VmEnd =
  /** The guest asked for a reset (i8042), which for a microVM means stop. */
  | { reason: "reset"; resultCode: number | null }
  /** The guest powered off or crashed the CPU (detail: a triple fault's registers). */
  | { reason: "shutdown" | "halt"; resultCode: number | null; detail?: string }
  /** The VMM was asked to stop. */
  | { reason: "stopped"; resultCode: number | null }
  /** Something went wrong with the vCPU: the message says what. */
  | { reason: "error"; message: string; resultCode: number | null };

export type BootProtocol = "bzimage" | "pvh" | "elf64";

/** Where vCPU 0 starts, by protocol (long-mode.ts sets the registers). */
type BootEntry =
  | { protocol: "bzimage" | "elf64"; rip: number; rsi: number }
  | { protocol: "pvh"; rip: number; startInfo: number };

export interface VmStats {
  state: string;
  /** CPU time each vCPU thread has used (user + system), in ms, as of the last refresh. */
  vcpuTimeMs: number[];
  exits: Record<string, number>;
  unclaimedPio: number;
  unclaimedMmio: number;
  bootMs: number | null;
  /** How the kernel was entered: bzImage (64-bit protocol), pvh, or elf64 (64-bit entry). */
  bootProtocol: BootProtocol | null;
  /** Each virtio-blk disk's counters, in the order of the config's disks. */
  disks: VirtioBlock["stats"][];
  /** Bytes typed at the serial console (POST /v1/console): queued, and dropped when full. */
  consoleInput: { bytes: number; dropped: number };
}

export class VmConfigError extends Error {
  constructor(field: string, message: string) {
    super(`vm config field ${field}: ${message}`);
    this.name = "VmConfigError";
  }
}

interface VcpuThread {
  /** The thread's pthread id once it has said it (for a kick from an exit handler). */
  pthread?: bigint;
  id: number;
  vcpu: VcpuFd;
  worker: Worker;
  ctl: Int32Array;
  thread: Promise<{ thread: bigint; tid: number }>;
}

/**
 * One microVM: guest RAM, the in-kernel irqchip and PIT, the devices on the port I/O and
 * MMIO buses, one thread per vCPU, and one for the disks' queues. Exits are handled on the
 * main thread, so devices need no locks; the two exceptions share only atomics: the vCPU
 * threads answer virtio interrupt status and acks (interrupt-status.ts), and the disks'
 * thread serves their rings between activation and reset (queue-thread.ts).
 */
export class Vm extends EventEmitter {
  readonly console = new RingText(256 * 1024);
  readonly pio = new Bus("pio");
  readonly mmio = new Bus("mmio");
  private readonly kvm: Kvm;
  private readonly vmFd: VmFd;
  readonly memory: GuestMemory;
  readonly serial: Serial;
  /** Host input for devices (taps, ioeventfds): watched off the event loop, handled on it. */
  private readonly watcher = new FdWatcher();
  private readonly serialShared: SerialShared;
  /** Console bytes from the vCPU threads are being collected (CONSOLE_BATCH_MS). */
  private consoleBatch: NodeJS.Timeout | null = null;
  private readonly serialKick: number;
  private readonly eventFds: number[] = [];
  private readonly threads: VcpuThread[] = [];
  private readonly exits = new Map<string, number>();
  /** The virtio devices' interrupt status, which the vCPU threads read and acknowledge. */
  private readonly interruptStatus = new InterruptStatusTable(MAX_VIRTIO_DEVICES, VIRTIO_MMIO_SIZE);
  /** The devices whose queues the queue thread serves (the disks), and that thread. */
  private readonly threaded: { device: VirtioDevice; options: QueueThreadDeviceOptions }[] = [];
  private queueThread: QueueThread | null = null;
  private stopping = false;
  private paused = false;
  private parked = 0;
  private resumeGate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => {};
  private parkedAll: (() => void) | null = null;
  private started = false;
  private resultCode: number | null = null;
  private startedAt = 0;
  private bootMs: number | null = null;
  private bootProtocol: BootProtocol | null = null;
  private endResolve: (end: VmEnd) => void = () => {};
  /** Resolves once every vCPU has stopped, with why. */
  readonly ended: Promise<VmEnd>;
  private endReason: VmEnd | null = null;

  constructor(readonly config: VmConfig) {
    super();
    checkConfig(config);
    live.add(this);
    this.ended = new Promise((resolve) => {
      this.endResolve = resolve;
    });
    this.kvm = Kvm.open();
    this.vmFd = this.kvm.createVm();
    this.vmFd.setTssAddr(TSS_ADDRESS);
    this.vmFd.setIdentityMapAddr(IDENTITY_MAP_ADDRESS);
    this.vmFd.createIrqchip();
    this.vmFd.createPit2();
    this.memory = new GuestMemory(config.memoryMiB * 1024 * 1024, {
      hugepages: config.hugepages === true,
    });
    this.memory.regions.forEach((region, slot) => {
      this.vmFd.setUserMemoryRegion(slot, region.guestAddress, region.size, region.hostAddress);
    });

    const serialShared = new SerialShared();
    const com1 = new IrqEdge(this.vmFd.fd, COM1_IRQ);
    const serial = new Serial(
      (bytes) => {
        this.console.push(bytes);
        this.emit("console", bytes);
      },
      () => com1.raise(),
      serialShared,
    );
    this.pio.insert(serial, COM1, 8);
    // The vCPU threads take console bytes themselves (serial-shared.ts) and signal this when
    // they put some in an empty ring.
    this.serialKick = eventfd(EFD_NONBLOCK, "eventfd for the console's output");
    this.eventFds.push(this.serialKick);
    const kickScratch = Buffer.alloc(8);
    const serialKick = this.serialKick;
    this.watcher.watch(serialKick, () => {
      readRaw(serialKick, kickScratch);
      // The bytes of a line collect before they are passed on: a vCPU thread signals only
      // when it finds the ring empty, so meanwhile it goes on without waking this thread.
      this.consoleBatch ??= setTimeout(() => {
        this.consoleBatch = null;
        serial.flushShared();
      }, CONSOLE_BATCH_MS);
    });
    this.serialShared = serialShared;
    this.pio.insert(
      new I8042(() => this.requestStop({ reason: "reset", resultCode: null })),
      I8042_BASE,
      5,
    );
    this.pio.insert(
      new BootTimer(() => {
        this.bootMs ??= performance.now() - this.startedAt;
      }),
      BOOT_TIMER_PORT,
      1,
    );
    if (config.debugExit) {
      this.pio.insert(
        new DebugExit((code) => {
          this.resultCode = code;
        }),
        DEBUG_EXIT_PORT,
        4,
      );
    }
    this.serial = serial;
    try {
      for (const disk of config.disks ?? []) this.addVirtio(new VirtioBlock(disk));
      for (const nic of config.nics ?? []) this.addVirtio(new VirtioNet(nic, this.watcher));
      if (config.rng !== false) this.addVirtio(new VirtioRng());
      if (config.vsock) this.addVirtio(new VirtioVsock(config.vsock));
      if (this.threaded.length > 0) {
        this.queueThread = new QueueThread(
          this.threaded.map((t) => t.options),
          { layout: this.memory.layout(), size: this.memory.size },
          this.vmFd.fd,
          this.interruptStatus.words.buffer as SharedArrayBuffer,
          (message) => this.requestStop({ reason: "error", message, resultCode: null }),
        );
        this.threaded.forEach((t, i) => {
          const handle = this.queueThread?.devices[i];
          if (handle) t.device.useQueueThread?.(handle);
        });
      }
    } catch (err) {
      // A missing disk or a busy tap: release what was already set up before saying so.
      this.finish({ reason: "error", message: (err as Error).message, resultCode: null });
      throw err;
    }
  }

  /** The virtio-mmio devices, with where they are, for the ACPI tables. */
  readonly virtio: {
    transport: MmioTransport;
    address: number;
    irq: number;
    device: VirtioDevice;
  }[] = [];

  /** Adds a device, or closes it and throws: every fd made here is in eventFds at once. */
  private addVirtio(device: VirtioDevice): void {
    try {
      this.wireVirtio(device);
    } catch (err) {
      device.close?.();
      throw err;
    }
  }

  private wireVirtio(device: VirtioDevice): void {
    const n = this.virtio.length;
    if (n >= MAX_VIRTIO_DEVICES)
      throw new VmConfigError("disks", `at most ${MAX_VIRTIO_DEVICES} virtio devices`);
    const address = VIRTIO_MMIO_BASE + n * VIRTIO_MMIO_SIZE;
    const irq = VIRTIO_IRQ_BASE + n;
    // irqfd: a write to this eventfd makes the kernel raise the line (an edge); for the
    // queues the kernel serves (vhost), which signal it. The monitor's own threads raise the
    // line themselves (IrqEdge: an irqfd on an IOAPIC line goes through a kworker).
    const irqEvent = eventfd(0, `irqfd for ${device.name}`);
    this.eventFds.push(irqEvent);
    this.vmFd.irqfd(irqEvent, irq);
    const edge = new IrqEdge(this.vmFd.fd, irq);
    const interruptStatus = this.interruptStatus.add(address);
    const transport = new MmioTransport(
      device,
      this.memory,
      () => edge.raise(),
      (message) => this.emit("device-error", message),
      interruptStatus,
    );
    this.mmio.insert(transport, address, VIRTIO_MMIO_SIZE);
    // ioeventfd: the guest's QueueNotify write for queue q signals an eventfd in the kernel
    // instead of stopping the vCPU; the device does the work on the main thread meanwhile, or
    // on a queue thread of its own.
    const threaded = device.queueThreadSpec !== undefined && device.useQueueThread !== undefined;
    const kicks: number[] = [];
    for (let q = 0; q < transport.queueCount; q++) {
      const kick = eventfd(EFD_NONBLOCK, `ioeventfd for ${device.name} queue ${q}`);
      this.eventFds.push(kick);
      this.vmFd.ioeventfd(
        address + VIRTIO_MMIO_QUEUE_NOTIFY,
        4,
        kick,
        KVM_IOEVENTFD_FLAG_DATAMATCH,
        q,
      );
      kicks.push(kick);
      // A queue the kernel serves (vhost) reads its own kicks; so does a queue thread.
      if (device.kernelQueues?.includes(q) || threaded) continue;
      const scratch = Buffer.alloc(8);
      this.watcher.watch(kick, () => {
        readRaw(kick, scratch);
        transport.notifyQueue(q);
      });
    }
    device.attachKernelQueues?.({ kicks, call: irqEvent });
    if (threaded && device.queueThreadSpec)
      this.threaded.push({
        device,
        options: {
          name: device.name,
          spec: device.queueThreadSpec(),
          kicks,
          irq,
          interruptCell: interruptStatus.at,
          onQueueError: (message) => transport.queueFailed(message),
        },
      });
    this.virtio.push({ transport, address, irq, device });
  }

  /**
   * The whole kernel command line: the serial console, reset through the i8042 (the ACPI
   * tables describe no sleep states to power off with), no PCI to probe, then the config's.
   * The virtio-mmio devices are in the DSDT (acpiPlatform()), not here: a kernel built with
   * VIRTIO_MMIO_CMDLINE_DEVICES would otherwise probe each twice and fail the second time.
   */
  kernelCmdline(): string {
    return [
      "console=ttyS0 reboot=k panic=1 pci=off i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd",
      this.config.cmdline ?? "",
    ]
      .filter(Boolean)
      .join(" ");
  }

  /** The machine as the ACPI tables describe it to a Linux guest. */
  acpiPlatform(): AcpiPlatform {
    return {
      vcpus: this.config.vcpus,
      virtio: this.virtio.map((v) => ({ address: v.address, size: VIRTIO_MMIO_SIZE, gsi: v.irq })),
      serial: [{ port: COM1, irq: COM1_IRQ }],
    };
  }

  /**
   * The kernel and its initrd go from their files straight into guest RAM. A bzImage takes
   * the 64-bit boot protocol; an ELF kernel with a PVH note is entered there (no
   * decompression); any other ELF at its 64-bit entry with a zero page, which is how a
   * vmlinux built without PVH boots and what the test guests ignore.
   */
  private loadKernel(): BootEntry {
    const file = this.config.kernel;
    const kernel = openSync(file, "r");
    const path = this.config.initrd;
    const initrd = path ? { fd: openSync(path, "r"), path } : null;
    try {
      const head = Buffer.alloc(0x1000);
      readSync(kernel, head, 0, head.length, 0);
      const options = {
        cmdline: this.kernelCmdline(),
        acpiRsdp: writeAcpiTables(this.memory, this.acpiPlatform()),
        ...(initrd ? { initrd: fileBytes(initrd.fd, initrd.path) } : {}),
      };
      if (isBzImage(head)) {
        const linux = loadBzImage(fileBytes(kernel, file), file, this.memory, options);
        return { protocol: "bzimage", rip: linux.entry, rsi: linux.zeroPage };
      }
      const elf = loadElf(fileBytes(kernel, file), file, this.memory);
      if (elf.pvhEntry !== null) {
        const pvh = writePvhStartInfo(this.memory, file, options, elf.high);
        return { protocol: "pvh", rip: elf.pvhEntry, startInfo: pvh.startInfo };
      }
      writeVmlinuxZeroPage(this.memory, file, options, elf.high);
      return { protocol: "elf64", rip: elf.entry, rsi: ZERO_PAGE_ADDRESS };
    } finally {
      closeSync(kernel);
      if (initrd) closeSync(initrd.fd);
    }
  }

  /** Loads the kernel, sets up every vCPU and starts them. */
  start(): void {
    if (this.started) return;
    this.started = true;
    let entry: BootEntry;
    try {
      writeBootTables(this.memory);
      entry = this.loadKernel();
    } catch (err) {
      // A kernel or initrd that cannot boot: nothing ran, and nothing may keep the process
      // alive (the disks' thread would): release everything before saying so.
      this.finish({ reason: "error", message: (err as Error).message, resultCode: null });
      throw err;
    }
    this.watcher.start();
    this.bootProtocol = entry.protocol;
    this.emit("boot", entry.protocol);
    this.memory.writeU64(TESTGUEST_RAM_SIZE_ADDRESS, this.memory.size);
    this.memory.writeU32(TESTGUEST_CPU_COUNT_ADDRESS, this.config.vcpus);
    const supported = this.kvm.supportedCpuid();
    const host = { tscDeadline: this.kvm.checkExtension(KVM_CAP_TSC_DEADLINE_TIMER) > 0 };
    this.startedAt = performance.now();
    for (let id = 0; id < this.config.vcpus; id++) {
      const fd = this.vmFd.createVcpu(id);
      const vcpu = new VcpuFd(fd, this.vmFd.vcpuMmapSize);
      vcpu.setCpuid(normaliseCpuid(supported, id, this.config.vcpus, host));
      setupLapic(vcpu);
      setupBootState(vcpu);
      // Secondary vCPUs wait for the boot CPU's INIT/SIPI; only vCPU 0 starts at the entry.
      if (id === 0) {
        if (entry.protocol === "pvh") enterPvh(vcpu, entry);
        else enterLongMode(vcpu, entry);
      }
      this.threads.push(this.spawnThread(id, fd, vcpu));
    }
    for (const t of this.threads) void this.serve(t);
  }

  private spawnThread(id: number, fd: number, vcpu: VcpuFd): VcpuThread {
    const ctl = new Int32Array(new SharedArrayBuffer(CTL_WORDS * 4));
    const worker = new Worker(new URL("./vcpu-worker.js", import.meta.url), {
      workerData: {
        id,
        fd,
        control: ctl.buffer,
        serial: { buffer: this.serialShared.buffer, port: COM1, kick: this.serialKick },
        runAddress: vcpu.runAddress,
        runSize: this.vmFd.vcpuMmapSize,
        interrupts: this.interruptStatus.words.buffer,
      },
      name: `vcpu${id}`,
      resourceLimits: SMALL_YOUNG_GENERATION,
    });
    const thread = new Promise<{ thread: bigint; tid: number }>((resolve, reject) => {
      worker.once("message", (m: { thread: bigint; tid: number }) => resolve(m));
      worker.once("error", reject);
      worker.once("exit", () => reject(new Error(`vcpu${id}: its thread ended before it ran`)));
    });
    worker.on("error", (err) =>
      this.requestStop({ reason: "error", message: `vcpu${id}: ${err.message}`, resultCode: null }),
    );
    // A thread that ends on its own (it failed to load, or threw) never hands back another
    // exit: its serve loop would wait forever, and the VM would never end. It ends the VM.
    worker.once("exit", (code) => {
      if (Atomics.compareExchange(ctl, CTL_STATE, STATE_RUNNING, STATE_GONE) !== STATE_RUNNING)
        return;
      Atomics.notify(ctl, CTL_STATE);
      this.requestStop({
        reason: "error",
        message: `vcpu${id}: its thread ended unexpectedly (exit code ${code})`,
        resultCode: null,
      });
    });
    const t: VcpuThread = { id, vcpu, worker, ctl, thread };
    thread.then(
      (m) => {
        t.pthread = m.thread;
      },
      () => {},
    );
    return t;
  }

  /** The main-thread side of one vCPU: wait for an exit, handle it, let it run again. */
  private async serve(t: VcpuThread): Promise<void> {
    for (;;) {
      const waited = Atomics.waitAsync(t.ctl, CTL_STATE, STATE_RUNNING);
      if (waited.async) await waited.value;
      const state = Atomics.load(t.ctl, CTL_STATE);
      if (state === STATE_GONE) break;
      if (state !== STATE_EXITED) continue;
      const result = Atomics.load(t.ctl, CTL_RESULT);
      let keepRunning = false;
      try {
        keepRunning = this.handleExit(t, result);
      } catch (err) {
        this.requestStop({
          reason: "error",
          message: `vcpu${t.id}: ${(err as Error).message}`,
          resultCode: null,
        });
      }
      if (this.stopping) keepRunning = false;
      if (keepRunning && this.paused) {
        await this.park();
        if (this.stopping) keepRunning = false;
      }
      Atomics.store(t.ctl, CTL_STATE, keepRunning ? STATE_RUNNING : STATE_STOP);
      Atomics.notify(t.ctl, CTL_STATE);
      if (!keepRunning) break;
    }
    await t.worker.terminate().catch(() => 0);
    this.threadDone();
  }

  private count(reason: string): void {
    this.exits.set(reason, (this.exits.get(reason) ?? 0) + 1);
  }

  /** Handles one KVM_RUN return on the main thread; false stops this vCPU. */
  private handleExit(t: VcpuThread, result: number): boolean {
    const run = new Struct(layouts.kvm_run, t.vcpu.run);
    if (result < 0) {
      if (-result === EINTR || -result === EAGAIN) {
        this.count("intr");
        run.set("immediate_exit", 0);
        return !this.stopping;
      }
      throw new Error(`KVM_RUN failed with errno ${-result}`);
    }
    const reason = run.get("exit_reason");
    switch (reason) {
      case KVM_EXIT_IO: {
        this.count("io");
        const size = run.get("io.size");
        const count = run.get("io.count");
        const port = run.get("io.port");
        const offset = run.get("io.data_offset");
        // The data lives in the kvm_run mapping itself; KVM chose the offset, but check it.
        if (offset + size * count > t.vcpu.run.length || ![1, 2, 4].includes(size)) {
          throw new Error(
            `KVM reported port I/O data outside kvm_run (offset ${offset}, ${size}×${count})`,
          );
        }
        const out = run.get("io.direction") === KVM_EXIT_IO_OUT;
        for (let i = 0; i < count; i++) {
          const data = t.vcpu.run.subarray(offset + i * size, offset + (i + 1) * size);
          if (out) this.pio.write(port, data);
          else this.pio.read(port, data);
        }
        return true;
      }
      case KVM_EXIT_MMIO: {
        this.count("mmio");
        const address = run.get("mmio.phys_addr");
        const len = run.get("mmio.len");
        if (len < 1 || len > 8) throw new Error(`KVM reported an MMIO access of ${len} bytes`);
        const data = t.vcpu.run.subarray(run.offset("mmio.data"), run.offset("mmio.data") + len);
        if (run.get("mmio.is_write")) this.mmio.write(address, data);
        else this.mmio.read(address, data);
        return true;
      }
      case KVM_EXIT_HLT:
        this.count("hlt");
        this.requestStop({ reason: "halt", resultCode: null });
        return false;
      case KVM_EXIT_SHUTDOWN: {
        // A triple fault: the guest's CPU reset itself. Where it was is all there is to go on.
        this.count("shutdown");
        let detail = "triple fault";
        try {
          const r = t.vcpu.getRegs();
          const sr = t.vcpu.getSregs();
          const hex = (v: bigint) => `0x${v.toString(16)}`;
          detail += ` on vCPU ${t.id}: rip=${hex(r.get64("rip"))} rsp=${hex(r.get64("rsp"))} cr0=${hex(sr.get64("cr0"))} cr2=${hex(sr.get64("cr2"))} cr3=${hex(sr.get64("cr3"))} cr4=${hex(sr.get64("cr4"))} efer=${hex(sr.get64("efer"))}`;
        } catch {
          // The registers are a diagnosis, not a requirement.
        }
        this.requestStop({ reason: "shutdown", resultCode: null, detail });
        return false;
      }
      case KVM_EXIT_SYSTEM_EVENT:
        this.count("system_event");
        this.requestStop({ reason: "shutdown", resultCode: null });
        return false;
      case KVM_EXIT_FAIL_ENTRY:
        throw new Error(
          `KVM could not enter the guest (hardware reason 0x${run.get64("fail_entry.hardware_entry_failure_reason").toString(16)})`,
        );
      case KVM_EXIT_INTERNAL_ERROR:
        throw new Error(`KVM internal error, suberror ${run.get("internal.suberror")}`);
      default:
        throw new Error(`unhandled KVM exit reason ${reason}`);
    }
  }

  get state(): "created" | "running" | "paused" | "stopping" | "stopped" {
    if (this.closed) return "stopped";
    if (this.stopping) return "stopping";
    if (!this.started) return "created";
    return this.paused ? "paused" : "running";
  }

  /** Holds a vCPU out of KVM_RUN until resume() (or stop()). */
  private async park(): Promise<void> {
    this.parked++;
    if (this.parked === this.threads.length) this.parkedAll?.();
    await this.resumeGate;
    this.parked--;
  }

  /** Kicks every vCPU out of the guest and keeps it out; resolves once all are parked. */
  pause(): Promise<void> {
    if (this.paused || this.stopping || !this.started) return Promise.resolve();
    this.paused = true;
    this.resumeGate = new Promise((resolve) => {
      this.openGate = resolve;
    });
    const allParked = new Promise<void>((resolve) => {
      this.parkedAll = resolve;
    });
    this.kickAll();
    return allParked;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.parkedAll = null;
    this.openGate();
  }

  private kickAll(): void {
    for (const t of this.threads) {
      // Out of KVM_RUN now, or at its next entry: immediate_exit covers a kick that lands
      // between two runs.
      t.vcpu.run[layouts.kvm_run.fields.immediate_exit[0]] = 1;
      // A thread that never started has nothing to kick (its error stops the VM).
      t.thread.then(
        ({ thread }) => pthreadKill(thread, KICK_SIGNAL),
        () => {},
      );
    }
  }

  /** Stops every vCPU: the first reason given is the one reported. */
  requestStop(end: VmEnd): void {
    if (!this.endReason) this.endReason = end;
    if (this.stopping) return;
    this.stopping = true;
    // Never started (or start failed before any vCPU ran): nothing to wait for.
    if (this.threads.length === 0) {
      this.threadDone();
      return;
    }
    this.kickAll();
    // Parked vCPUs leave through the gate and see that the VM is stopping.
    this.openGate();
  }

  stop(): Promise<VmEnd> {
    this.requestStop({ reason: "stopped", resultCode: null });
    return this.ended;
  }

  private vcpuTimes: number[] = [];

  /** Reads each vCPU thread's CPU time from /proc (call before stats()). */
  async refreshCpuTimes(): Promise<void> {
    const ticks = await Promise.all(
      this.threads.map((t) =>
        t.thread.then(
          ({ tid }) => threadCpuMs(tid),
          () => 0,
        ),
      ),
    );
    this.vcpuTimes = ticks;
  }

  private finished = 0;
  private closed = false;
  private threadDone(): void {
    this.finished++;
    if (this.finished < this.threads.length || this.closed) return;
    const end = this.endReason ?? { reason: "stopped", resultCode: null };
    // The guest's last console bytes, which no signal may have announced yet.
    this.serial.flushShared();
    // Nothing touches guest memory or kvm_run once every vCPU thread is gone.
    for (const t of this.threads) t.vcpu.close();
    this.finish({ ...end, resultCode: this.resultCode });
  }

  /** The VM is over, once: everything released, and `ended` says why. */
  private finish(end: VmEnd): void {
    if (this.closed) return;
    this.closed = true;
    live.delete(this);
    this.release();
    this.endResolve(end);
  }

  /**
   * The process exits without stop() (process.exit, an uncaught error): Node then waits for
   * its threads, and a vCPU in KVM_RUN or a thread in poll(2) would not come back on its own
   * (process.exit() with a VM running hung for good). Gets every thread out of the kernel,
   * synchronously.
   */
  abandon(): void {
    this.stopping = true;
    for (const t of this.threads) {
      Atomics.store(t.ctl, CTL_STATE, STATE_STOP);
      Atomics.notify(t.ctl, CTL_STATE);
      t.vcpu.run[layouts.kvm_run.fields.immediate_exit[0]] = 1;
      if (t.pthread !== undefined) pthreadKill(t.pthread, KICK_SIGNAL);
    }
    void this.queueThread?.stop();
    // Its poll(2) runs on a libuv thread, which Node joins at exit.
    this.watcher.stop();
  }

  private release(): void {
    this.watcher.stop();
    if (this.consoleBatch) clearTimeout(this.consoleBatch);
    // First: once stop() returns, the thread touches neither guest memory nor the disks.
    void this.queueThread?.stop();
    for (const v of this.virtio) v.device.close?.();
    for (const fd of this.eventFds) close(fd);
    this.memory.close();
    this.vmFd.close();
    this.kvm.close();
  }

  stats(): VmStats {
    return {
      state: this.state,
      vcpuTimeMs: this.vcpuTimes,
      exits: {
        ...Object.fromEntries(this.exits),
        // Answered by the vCPU threads themselves; the main thread never saw these.
        mmio_interrupt: this.threads.reduce((n, t) => n + Atomics.load(t.ctl, CTL_FAST_MMIO), 0),
        io_console: this.threads.reduce((n, t) => n + Atomics.load(t.ctl, CTL_FAST_PIO), 0),
      },
      unclaimedPio: this.pio.unclaimedReads + this.pio.unclaimedWrites,
      unclaimedMmio: this.mmio.unclaimedReads + this.mmio.unclaimedWrites,
      bootMs: this.bootMs,
      bootProtocol: this.bootProtocol,
      disks: this.virtio
        .map((v) => v.device)
        .filter((d): d is VirtioBlock => d instanceof VirtioBlock)
        .map((d) => ({ ...d.stats })),
      consoleInput: { ...this.serial.inputStats },
    };
  }
}

/** utime + stime of a thread of this process, in ms (the kernel counts in USER_HZ = 100). */
function threadCpuMs(tid: number): number {
  try {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

function checkConfig(config: VmConfig): void {
  if (
    !Number.isInteger(config.memoryMiB) ||
    config.memoryMiB < 8 ||
    config.memoryMiB > 1024 * 1024
  ) {
    throw new VmConfigError(
      "memoryMiB",
      `must be a whole number from 8 to 1048576, not ${config.memoryMiB}`,
    );
  }
  if (!Number.isInteger(config.vcpus) || config.vcpus < 1 || config.vcpus > 64) {
    throw new VmConfigError("vcpus", `must be a whole number from 1 to 64, not ${config.vcpus}`);
  }
}

// The kick signal must not kill the process: a handler makes it only interrupt KVM_RUN.
process.on("SIGUSR2", () => {});

/** The VMs of this process that have not ended (see abandon()). */
const live = new Set<Vm>();
process.on("exit", () => {
  for (const vm of live) vm.abandon();
});
