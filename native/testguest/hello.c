/* testguest-hello: one line on COM1, result 0 (2 if .bss was not zeroed). */
#include "testguest.h"

/* The VMM must zero .bss (p_memsz > p_filesz); we check a piece of it. */
static volatile uint8_t bss_probe[256];

int guest_main(void)
{
	puts_serial("hello from the flatgrid test guest\n");
	for (size_t i = 0; i < sizeof(bss_probe); i++) {
		if (bss_probe[i]) {
			puts_serial("bss not zeroed\n");
			return 2;
		}
	}
	return 0;
}
