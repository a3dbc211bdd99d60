export { ElfError } from "./boot/elf.js";
export { Bus, type BusDevice, BusError } from "./bus.js";
export { GuestMemory, GuestMemoryError } from "./guest-memory.js";
export { Vm, type VmConfig, VmConfigError, type VmEnd, type VmStats } from "./vm.js";
