export * from "./abi.js";
export * from "./bootparam.js";
export { type CpuidEntry, IrqEdge, Kvm, KvmUnavailableError, VcpuFd, VmFd } from "./kvm.js";
export * as layouts from "./layouts.js";
export { type Layout, Struct } from "./layouts.js";
export {
  close,
  EFD_NONBLOCK,
  eventfd,
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  fallocate,
  gettid,
  ioctl,
  ioctlRaw,
  ioctlValue,
  iovec,
  MADV_DONTFORK,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_NORESERVE,
  MAP_PRIVATE,
  type Mapping,
  madvise,
  mmap,
  mmapAligned,
  munmap,
  O_NONBLOCK,
  O_RDWR,
  open,
  POLLIN,
  PROT_READ,
  PROT_WRITE,
  poll,
  pollAsync,
  polled,
  pollfd,
  pollInputSet,
  preadv,
  pthreadKill,
  pthreadSelf,
  pwritev,
  read,
  readRaw,
  SyscallError,
  setThreadNice,
  signalEventfd,
  UIO_MAXIOV,
  view,
  viewAt,
  write,
  writeRaw,
} from "./libc.js";
export * from "./pvh-abi.js";
export * from "./tun-abi.js";
export * from "./vhost-abi.js";
export * from "./virtio-abi.js";
