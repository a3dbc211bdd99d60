export * from "./abi.js";
export * from "./bootparam.js";
export { type CpuidEntry, Kvm, KvmUnavailableError, VcpuFd, VmFd } from "./kvm.js";
export * as layouts from "./layouts.js";
export { type Layout, Struct } from "./layouts.js";
export {
  EFD_NONBLOCK,
  eventfd,
  gettid,
  ioctlRaw,
  MADV_DONTFORK,
  MADV_HUGEPAGE,
  MAP_ANONYMOUS,
  MAP_HUGETLB,
  MAP_NORESERVE,
  MAP_PRIVATE,
  type Mapping,
  madvise,
  mmap,
  munmap,
  PROT_READ,
  PROT_WRITE,
  pthreadKill,
  pthreadSelf,
  read,
  SyscallError,
  view,
  write,
} from "./libc.js";
export * from "./virtio-abi.js";
