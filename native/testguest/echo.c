/*
 * testguest-echo: reads COM1 (polled) and writes each byte back upper-cased, so a test can
 * type at the VM's console and see the guest answer; a "." ends it with result 0.
 */
#include "testguest.h"

#define COM1_RBR    0x3f8  /* receive buffer register (read) */
#define COM1_LSR_DR 0x01   /* data ready */

int guest_main(void)
{
	char out[2] = {0, 0};
	puts_serial("echo ready\n");
	for (;;) {
		while (!(inb(COM1_LSR) & COM1_LSR_DR))
			;
		char c = (char)inb(COM1_RBR);
		if (c == '.') {
			puts_serial("\nbye\n");
			return 0;
		}
		out[0] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
		puts_serial(out);
	}
}
