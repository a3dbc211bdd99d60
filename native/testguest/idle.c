/*
 * testguest-idle: says it is up, then halts with interrupts off until the VMM stops it. A
 * long-running guest that costs no CPU: what the agent's tests run as appliance instances on
 * a host whose KVM boots no Linux.
 */
#include "testguest.h"

int guest_main(void)
{
	puts_serial("flatgrid-guest: ready\n");
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}
