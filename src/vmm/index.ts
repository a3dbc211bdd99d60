export {
  ACPI_TABLES_END,
  ACPI_TABLES_START,
  AcpiError,
  type AcpiPlatform,
  type AcpiTables,
  buildAcpiTables,
  writeAcpiTables,
} from "./boot/acpi.js";
export { ElfError, isElf, type LoadedElf, loadElf, pvhEntryOf } from "./boot/elf.js";
export { fileBytes, type ImageBytes, isBzImage, KernelImageError } from "./boot/image-bytes.js";
export {
  e820Map,
  type LoadedLinux,
  loadBzImage,
  writeVmlinuxZeroPage,
} from "./boot/linux.js";
export { ZERO_PAGE_ADDRESS } from "./boot/long-mode.js";
export { START_INFO_ADDRESS, writePvhStartInfo } from "./boot/pvh.js";
export { extractVmlinux, Lz4Error, lz4LegacyDecode } from "./boot/vmlinux.js";
export { Bus, type BusDevice, BusError } from "./bus.js";
export { loadVmConfig, parseVmConfig, VmConfigFileError, VmJsonError } from "./config.js";
export { attachConsole } from "./console-attach.js";
export { Tap, TapError } from "./devices/tap.js";
export { type BlockOptions, DiskError, VirtioBlock } from "./devices/virtio-blk.js";
export { NicConfigError, type NicOptions, VirtioNet } from "./devices/virtio-net.js";
export { VirtioRng } from "./devices/virtio-rng.js";
export { VirtioVsock, VsockError, type VsockOptions } from "./devices/virtio-vsock.js";
export { FdWatcher } from "./fd-watcher.js";
export {
  GuestMemory,
  GuestMemoryError,
  MMIO_HOLE_END,
  MMIO_HOLE_START,
} from "./guest-memory.js";
export { runVmm, type VmmOptions } from "./main.js";
export { FENCED_EXIT, vmCgroupLimits, vmmOverheadMiB } from "./process-contract.js";
export {
  type DeviceContext,
  type KernelQueues,
  MmioTransport,
  type VirtioDevice,
} from "./virtio/mmio-transport.js";
export {
  type Chain,
  type Descriptor,
  needEvent,
  QueueError,
  Virtqueue,
} from "./virtio/queue.js";
export {
  type BootProtocol,
  Vm,
  type VmConfig,
  VmConfigError,
  type VmEnd,
  type VmStats,
} from "./vm.js";
