import { constants } from "node:os";
import koffi from "koffi";
import type { Layout } from "./layouts.js";

/**
 * The few libc calls the VMM needs, through koffi. Each wrapper turns a -1 return into a
 * SyscallError that names the call, the errno and what was being done.
 */

const lib = koffi.load("libc.so.6");

const c = {
  open: lib.func("int open(const char *path, int flags, int mode)"),
  close: lib.func("int close(int fd)"),
  // ioctl is variadic in C; on x86-64 a fixed prototype passes the third argument in the
  // same register, and glibc's ioctl only forwards it to the system call.
  ioctlPtr: lib.func("ioctl", "int", ["int", "unsigned long", "void *"]),
  ioctlVal: lib.func("ioctl", "int", ["int", "unsigned long", "unsigned long"]),
  mmap: lib.func("void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)"),
  munmap: lib.func("int munmap(void *addr, size_t len)"),
  madvise: lib.func("int madvise(void *addr, size_t len, int advice)"),
  eventfd: lib.func("int eventfd(unsigned int initval, int flags)"),
  read: lib.func("intptr_t read(int fd, void *buf, size_t count)"),
  write: lib.func("intptr_t write(int fd, const void *buf, size_t count)"),
  pread: lib.func("intptr_t pread(int fd, void *buf, size_t count, int64_t off)"),
  pwrite: lib.func("intptr_t pwrite(int fd, const void *buf, size_t count, int64_t off)"),
  preadv: lib.func("intptr_t preadv(int fd, const void *iov, int iovcnt, int64_t off)"),
  pwritev: lib.func("intptr_t pwritev(int fd, const void *iov, int iovcnt, int64_t off)"),
  fallocate: lib.func("int fallocate(int fd, int mode, int64_t off, int64_t len)"),
  poll: lib.func("int poll(void *fds, unsigned long nfds, int timeout)"),
  pthreadSelf: lib.func("unsigned long pthread_self()"),
  gettid: lib.func("int gettid()"),
  setpriority: lib.func("int setpriority(int which, unsigned int who, int prio)"),
  pthreadKill: lib.func("int pthread_kill(unsigned long thread, int sig)"),
};

/** <fcntl.h>, <sys/mman.h>, <sys/eventfd.h>, <poll.h> for x86-64 Linux. */
export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;
export const PROT_READ = 0x1;
export const PROT_WRITE = 0x2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MAP_HUGETLB = 0x40000;
export const MADV_DONTFORK = 10;
export const MADV_HUGEPAGE = 14;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const POLLIN = 0x1;
/** setpriority(2)'s "which": one process, or on Linux one thread by its id. <sys/resource.h> */
export const PRIO_PROCESS = 0;
/** fallocate(2) modes, <linux/falloc.h>. */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;
/** The most struct iovec one preadv/pwritev takes (<sys/uio.h>; IOV_MAX in <limits.h>). */
export const UIO_MAXIOV = 1024;

/** The libc constants above that a header defines, for the check against the headers. */
export const LIBC_CONSTANTS: Record<string, { value: number; header: string }> = {
  O_RDWR: { value: O_RDWR, header: "fcntl.h" },
  O_CLOEXEC: { value: O_CLOEXEC, header: "fcntl.h" },
  O_NONBLOCK: { value: O_NONBLOCK, header: "fcntl.h" },
  PROT_READ: { value: PROT_READ, header: "sys/mman.h" },
  PROT_WRITE: { value: PROT_WRITE, header: "sys/mman.h" },
  MAP_SHARED: { value: MAP_SHARED, header: "sys/mman.h" },
  MAP_PRIVATE: { value: MAP_PRIVATE, header: "sys/mman.h" },
  MAP_ANONYMOUS: { value: MAP_ANONYMOUS, header: "sys/mman.h" },
  MAP_NORESERVE: { value: MAP_NORESERVE, header: "sys/mman.h" },
  MAP_HUGETLB: { value: MAP_HUGETLB, header: "sys/mman.h" },
  MADV_DONTFORK: { value: MADV_DONTFORK, header: "sys/mman.h" },
  MADV_HUGEPAGE: { value: MADV_HUGEPAGE, header: "sys/mman.h" },
  EFD_CLOEXEC: { value: EFD_CLOEXEC, header: "sys/eventfd.h" },
  EFD_NONBLOCK: { value: EFD_NONBLOCK, header: "sys/eventfd.h" },
  POLLIN: { value: POLLIN, header: "poll.h" },
  UIO_MAXIOV: { value: UIO_MAXIOV, header: "sys/uio.h" },
  PRIO_PROCESS: { value: PRIO_PROCESS, header: "sys/resource.h" },
  FALLOC_FL_KEEP_SIZE: { value: FALLOC_FL_KEEP_SIZE, header: "linux/falloc.h" },
  FALLOC_FL_PUNCH_HOLE: { value: FALLOC_FL_PUNCH_HOLE, header: "linux/falloc.h" },
  FALLOC_FL_ZERO_RANGE: { value: FALLOC_FL_ZERO_RANGE, header: "linux/falloc.h" },
};

const EINTR_ERRNO = constants.errno.EINTR;
const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));

export class SyscallError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
    readonly what: string,
  ) {
    super(`${what}: ${call} failed: ${ERRNO_NAMES.get(errno) ?? `errno ${errno}`}`);
    this.name = "SyscallError";
  }

  get code(): string {
    return ERRNO_NAMES.get(this.errno) ?? `E${this.errno}`;
  }
}

function check(result: number | bigint, call: string, what: string): number {
  if (Number(result) < 0) throw new SyscallError(call, koffi.errno(), what);
  return Number(result);
}

export type Pointer = unknown;

export function open(path: string, flags: number, what: string): number {
  return check(c.open(path, flags | O_CLOEXEC, 0), "open", what);
}

export function close(fd: number): void {
  c.close(fd);
}

/** ioctl with a buffer argument (a struct the kernel reads or fills). */
/**
 * A signal that arrives during a long ioctl (KVM_CREATE_VM sets up a whole VM) makes it fail
 * with EINTR before it did anything: ask again, as QEMU does. KVM_RUN, whose EINTR means
 * something, goes through ioctlRaw instead.
 */
function retried(call: () => number | bigint): number | bigint {
  for (let i = 0; ; i++) {
    const r = call();
    if (Number(r) >= 0 || koffi.errno() !== EINTR_ERRNO || i >= 100) return r;
  }
}

export function ioctl(fd: number, request: number, arg: Buffer | null, what: string): number {
  return check(
    retried(() => c.ioctlPtr(fd, request, arg)),
    "ioctl",
    what,
  );
}

/** ioctl with an integer argument. */
export function ioctlValue(
  fd: number,
  request: number,
  value: number | bigint,
  what: string,
): number {
  return check(
    retried(() => c.ioctlVal(fd, request, value)),
    "ioctl",
    what,
  );
}

/** ioctl that may fail with EINTR/EAGAIN as part of normal operation (KVM_RUN): returns -errno. */
export function ioctlRaw(fd: number, request: number, value: number): number {
  const r = c.ioctlVal(fd, request, value) as number;
  return r < 0 ? -koffi.errno() : r;
}

const MAP_FAILED = 0xffffffffffffffffn;

export interface Mapping {
  pointer: Pointer;
  address: bigint;
  length: number;
}

export function mmap(
  length: number,
  prot: number,
  flags: number,
  fd: number,
  what: string,
): Mapping {
  const pointer = c.mmap(null, length, prot, flags, fd, 0);
  const address = pointer === null ? 0n : koffi.address(pointer);
  if (pointer === null || address === MAP_FAILED)
    throw new SyscallError("mmap", koffi.errno(), what);
  return { pointer, address, length };
}

/**
 * An anonymous mapping that starts on a multiple of `align` (a power of two): `length +
 * align` bytes are mapped and the slack before and after is unmapped. Guest RAM needs this
 * for huge pages: KVM maps a 2 MiB guest page with one huge entry only where the host
 * address is 2 MiB-aligned too, and Linux before 6.7 does not align large mappings itself.
 */
export function mmapAligned(
  length: number,
  align: number,
  prot: number,
  flags: number,
  what: string,
): Mapping {
  const over = mmap(length + align, prot, flags, -1, what);
  const mask = BigInt(align) - 1n;
  const address = (over.address + mask) & ~mask;
  const head = Number(address - over.address);
  if (head > 0) check(c.munmap(over.pointer, head), "munmap", what);
  // The slack after is never empty: head < align.
  check(c.munmap(pointerAt(address + BigInt(length)), align - head), "munmap", what);
  return { pointer: pointerAt(address), address, length };
}

/** A pointer to an address (koffi makes pointers from memory, not from numbers). */
function pointerAt(address: bigint): Pointer {
  const cell = Buffer.alloc(8);
  cell.writeBigUInt64LE(address);
  return koffi.decode(cell, "void *");
}

export function munmap(mapping: Mapping): void {
  c.munmap(mapping.pointer, mapping.length);
}

export function madvise(mapping: Mapping, advice: number, what: string): void {
  check(c.madvise(mapping.pointer, mapping.length, advice), "madvise", what);
}

/** Memory of a mapping as an ArrayBuffer, without copying. */
export function view(mapping: Mapping, offset = 0, length = mapping.length - offset): ArrayBuffer {
  if (offset === 0) return koffi.view(mapping.pointer, length);
  return viewAt(mapping.address + BigInt(offset), length);
}

/**
 * Memory at an address this process mapped elsewhere (another thread's mapping) as an
 * ArrayBuffer, without copying. The caller keeps the mapping alive while it uses the view.
 */
export function viewAt(address: bigint, length: number): ArrayBuffer {
  return koffi.view(pointerAt(address), length);
}

export function eventfd(flags: number, what: string): number {
  return check(c.eventfd(0, flags | EFD_CLOEXEC), "eventfd", what);
}

/** read(2) that reports EAGAIN as -EAGAIN instead of throwing (non-blocking fds). */
export function readRaw(fd: number, buf: Buffer, length = buf.length): number {
  const r = Number(c.read(fd, buf, length));
  return r < 0 ? -koffi.errno() : r;
}

/** write(2) that reports errors as -errno instead of throwing. */
export function writeRaw(fd: number, buf: Buffer, length = buf.length): number {
  const r = Number(c.write(fd, buf, length));
  return r < 0 ? -koffi.errno() : r;
}

export function read(fd: number, buf: Buffer, what: string): number {
  return check(c.read(fd, buf, buf.length), "read", what);
}

export function write(fd: number, buf: Buffer, what: string): number {
  return check(c.write(fd, buf, buf.length), "write", what);
}

export function pread(fd: number, buf: Buffer, offset: number, what: string): number {
  return check(c.pread(fd, buf, buf.length, offset), "pread", what);
}

export function pwrite(fd: number, buf: Buffer, offset: number, what: string): number {
  return check(c.pwrite(fd, buf, buf.length, offset), "pwrite", what);
}

/** struct iovec from <sys/uio.h>; test/kvm/abi.test.ts checks it against the header. */
export const iovec: Layout = {
  c: "struct iovec",
  size: 16,
  fields: { iov_base: [0, 8], iov_len: [8, 8] },
};

/**
 * preadv(2) into a table of struct iovec (`count` entries of `iov`): the buffers are host
 * addresses, so that one call fills many pieces of guest RAM without a Buffer for each.
 */
export function preadv(
  fd: number,
  iov: Buffer,
  count: number,
  offset: number,
  what: string,
): number {
  return check(c.preadv(fd, iov, count, offset), "preadv", what);
}

/** pwritev(2) from a table of struct iovec, as preadv(). */
export function pwritev(
  fd: number,
  iov: Buffer,
  count: number,
  offset: number,
  what: string,
): number {
  return check(c.pwritev(fd, iov, count, offset), "pwritev", what);
}

/** setpriority(PRIO_PROCESS, tid, nice): on Linux, a thread's own nice value. */
export function setThreadNice(tid: number, nice: number): void {
  check(c.setpriority(PRIO_PROCESS, tid, nice), "setpriority", "setting a thread's nice value");
}

/** fallocate(2): `mode` FALLOC_FL_*, on `length` bytes at `offset`. */
export function fallocate(
  fd: number,
  mode: number,
  offset: number,
  length: number,
  what: string,
): void {
  check(c.fallocate(fd, mode, offset, length), "fallocate", what);
}

/**
 * poll(2) on one of koffi's worker threads: the event loop stays free while it waits.
 * fds must stay referenced until the promise settles (the kernel writes revents into it).
 */
export function pollAsync(fds: Buffer, count: number, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    c.poll.async(fds, count, timeoutMs, (err: unknown, result: number) => {
      if (err) reject(err);
      else resolve(result < 0 ? -koffi.errno() : result);
    });
  });
}

/** struct pollfd from <poll.h>; test/kvm/abi.test.ts checks it against the header. */
export const pollfd: Layout = {
  c: "struct pollfd",
  size: 8,
  fields: { fd: [0, 4], events: [4, 2], revents: [6, 2] },
};

/** An array of struct pollfd that asks for input on each of `fds`, for poll()/pollAsync(). */
export function pollInputSet(fds: readonly number[]): Buffer {
  const set = Buffer.alloc(pollfd.size * fds.length);
  fds.forEach((fd, i) => {
    set.writeInt32LE(fd, pollfd.size * i + (pollfd.fields.fd?.[0] ?? 0));
    set.writeInt16LE(POLLIN, pollfd.size * i + (pollfd.fields.events?.[0] ?? 0));
  });
  return set;
}

/** Whether poll() reported anything (revents) for entry i of such an array. */
export function polled(set: Buffer, i: number): boolean {
  return set.readInt16LE(pollfd.size * i + (pollfd.fields.revents?.[0] ?? 0)) !== 0;
}

const EVENTFD_ONE = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);

/** Adds one to an eventfd: wakes whoever polls it (for an irqfd, raises its line). */
export function signalEventfd(fd: number): number {
  return writeRaw(fd, EVENTFD_ONE);
}

/** poll(2) on an array of struct pollfd (pollInputSet()). */
export function poll(fds: Buffer, count: number, timeoutMs: number, what: string): number {
  return check(c.poll(fds, count, timeoutMs), "poll", what);
}

export function pthreadSelf(): bigint {
  return BigInt(c.pthreadSelf());
}

/** The kernel's id of the calling thread (for /proc/self/task). */
export function gettid(): number {
  return c.gettid() as number;
}

export function pthreadKill(thread: bigint, signal: number): number {
  return c.pthreadKill(thread, signal) as number;
}
