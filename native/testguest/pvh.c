/*
 * testguest-pvh: entered through PVH (pvh-start.S), prints what the VMM's
 * hvm_start_info says, for test/kvm/pvh.test.ts to check:
 *   pvh magic 0x336ec578 version 1
 *   pvh cmdline <the command line>
 *   pvh memmap <addr> <size> <type>      (one line each)
 *   pvh module <paddr> <size> <sum of its bytes mod 2^32>
 *   pvh rsdp <the 8 bytes there>
 * Result 0; 1 if the magic is wrong (nothing else is printed then).
 */
#include "testguest.h"

/* Set by pvh_start32 from EBX before anything else runs. */
uint32_t pvh_start_info_paddr;

struct start_info {
	uint32_t magic, version, flags, nr_modules;
	uint64_t modlist_paddr, cmdline_paddr, rsdp_paddr, memmap_paddr;
	uint32_t memmap_entries, reserved;
};
struct modlist_entry {
	uint64_t paddr, size, cmdline_paddr, reserved;
};
struct memmap_entry {
	uint64_t addr, size;
	uint32_t type, reserved;
};

static void field(const char *name, uint64_t v)
{
	puts_serial(" ");
	puts_serial(name);
	print_hex(v);
}

int guest_main(void)
{
	const struct start_info *si = (const void *)(uintptr_t)pvh_start_info_paddr;

	puts_serial("pvh magic ");
	print_hex(si->magic);
	if (si->magic != 0x336ec578) {
		puts_serial("\n");
		return 1;
	}
	puts_serial(" version ");
	print_dec(si->version);
	puts_serial("\npvh cmdline ");
	if (si->cmdline_paddr)
		puts_serial((const char *)(uintptr_t)si->cmdline_paddr);
	puts_serial("\n");
	const struct memmap_entry *mm = (const void *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		puts_serial("pvh memmap");
		field("", mm[i].addr);
		field("", mm[i].size);
		puts_serial(" ");
		print_dec(mm[i].type);
		puts_serial("\n");
	}
	const struct modlist_entry *mod = (const void *)(uintptr_t)si->modlist_paddr;
	for (uint32_t i = 0; i < si->nr_modules; i++) {
		const uint8_t *p = (const void *)(uintptr_t)mod[i].paddr;
		uint32_t sum = 0;
		for (uint64_t j = 0; j < mod[i].size; j++)
			sum += p[j];
		puts_serial("pvh module");
		field("", mod[i].paddr);
		puts_serial(" ");
		print_dec(mod[i].size);
		puts_serial(" ");
		print_dec(sum);
		puts_serial("\n");
	}
	if (si->rsdp_paddr) {
		char sig[9] = { 0 };
		for (int i = 0; i < 8; i++)
			sig[i] = ((const char *)(uintptr_t)si->rsdp_paddr)[i];
		puts_serial("pvh rsdp ");
		puts_serial(sig);
		puts_serial("\n");
	}
	return 0;
}
