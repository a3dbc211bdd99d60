/*
 * testguest-memcheck: fill guest RAM from 4 MiB up to min(RAM size, 1 GiB)
 * with an address-dependent pattern, then read it all back.
 * The VMM stores the RAM size in bytes as a little-endian u64 at 0x6ff8
 * (RAM_SIZE_ADDR).
 */
#include "testguest.h"

#define CHECK_START    (4UL << 20)
#define IDENTITY_LIMIT (1UL << 30)

static inline uint64_t pattern(uint64_t addr)
{
	/* Differs for every 8-byte word and in every bit position. */
	return (addr * 0x9e3779b97f4a7c15ULL) ^ 0x5a5a5a5a5a5a5a5aULL;
}

int guest_main(void)
{
	uint64_t size = *(volatile uint64_t *)RAM_SIZE_ADDR;
	uint64_t end = size < IDENTITY_LIMIT ? size : IDENTITY_LIMIT;

	end &= ~7UL;
	if (end <= CHECK_START) {
		puts_serial("memcheck FAIL ram size ");
		print_hex(size);
		puts_serial("\n");
		return 2;
	}

	/* Write everything first, then read: catches aliasing as well. */
	for (uint64_t a = CHECK_START; a < end; a += 8)
		*(volatile uint64_t *)a = pattern(a);
	for (uint64_t a = CHECK_START; a < end; a += 8) {
		if (*(volatile uint64_t *)a != pattern(a)) {
			puts_serial("memcheck FAIL at ");
			print_hex(a);
			puts_serial("\n");
			return 1;
		}
	}

	puts_serial("memcheck ok ");
	print_dec(end >> 20);
	puts_serial(" MiB\n");
	return 0;
}
