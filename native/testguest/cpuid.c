/* testguest-cpuid: print what CPUID leaves 0 and 1 say. */
#include "testguest.h"

static inline void cpuid(uint32_t leaf, uint32_t r[4])
{
	__asm__ volatile("cpuid"
			 : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3])
			 : "a"(leaf), "c"(0));
}

static void put_reg_chars(uint32_t r)
{
	for (int i = 0; i < 4; i++)
		putc_serial((char)(r >> (8 * i)));
}

int guest_main(void)
{
	uint32_t l0[4], l1[4];

	cpuid(0, l0);
	cpuid(1, l1);

	uint32_t eax = l1[0];
	uint32_t family = (eax >> 8) & 0xf;
	uint32_t model = (eax >> 4) & 0xf;
	if (family == 0xf)
		family += (eax >> 20) & 0xff;
	if (family == 0x6 || family >= 0xf)
		model += ((eax >> 16) & 0xf) << 4;

	puts_serial("cpuid vendor=");
	put_reg_chars(l0[1]);   /* EBX, EDX, ECX: "GenuineIntel" order */
	put_reg_chars(l0[3]);
	put_reg_chars(l0[2]);
	puts_serial(" family=");
	print_dec(family);
	puts_serial(" model=");
	print_dec(model);
	puts_serial(" hypervisor=");
	print_dec((l1[2] >> 31) & 1);
	puts_serial(" apic=");
	print_dec(l1[1] >> 24);
	puts_serial(" tsc_deadline=");
	print_dec((l1[2] >> 24) & 1);
	puts_serial(" htt=");
	print_dec((l1[3] >> 28) & 1);
	puts_serial("\n");
	return 0;
}
