/*
 * testguest-mute: a guest that runs but never says it is up (no "flatgrid-guest: ready"
 * line), like a kernel stuck early in its boot: what the agent's boot deadline is tested
 * with. It halts with interrupts off, so it costs no CPU while it waits to be stopped.
 */
#include "testguest.h"

int guest_main(void)
{
	puts_serial("testguest-mute: running, and never ready\n");
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}
