/*
 * testguest-bad: a misbehaving guest. It maps 0-4 GiB itself (map_4gib),
 * then pokes MMIO outside RAM and unassigned I/O ports with every access
 * size. The VMM must survive all of it; the guest then reports 0 and resets.
 */
#include "testguest.h"

static void poke_mmio(uint64_t base)
{
	volatile uint8_t *b = (volatile uint8_t *)base;
	volatile uint16_t *w = (volatile uint16_t *)(base + 0x10);
	volatile uint32_t *l = (volatile uint32_t *)(base + 0x20);
	volatile uint64_t *q = (volatile uint64_t *)(base + 0x30);

	*b = 0xa5;
	*w = 0xa55a;
	*l = 0xdeadbeef;
	*q = 0x0123456789abcdefULL;
	(void)*b;
	(void)*w;
	(void)*l;
	(void)*q;
}

static void poke_port(uint16_t port)
{
	outb(port, 0x5a);
	outw(port, 0x5a5a);
	outl(port, 0x5a5a5a5a);
	(void)inb(port);
	(void)inw(port);
	(void)inl(port);
}

static uint8_t string_buf[16];

int guest_main(void)
{
	puts_serial("bad guest\n");
	map_4gib();

	poke_mmio(0xd0000000UL);
	poke_mmio(0xfeb00000UL);
	poke_mmio(0xffffff00UL);
	/* The last bytes below 4 GiB, each size ending exactly at 4 GiB. */
	*(volatile uint64_t *)0xfffffff8UL = 0x1122334455667788ULL;
	(void)*(volatile uint64_t *)0xfffffff8UL;
	*(volatile uint32_t *)0xfffffffcUL = 0xcafef00d;
	(void)*(volatile uint32_t *)0xfffffffcUL;
	*(volatile uint8_t *)0xffffffffUL = 0x42;
	(void)*(volatile uint8_t *)0xffffffffUL;

	poke_port(0x1234);
	poke_port(0x80);

	/* String I/O: one exit each with count > 1. */
	memset(string_buf, 'x', sizeof(string_buf));
	const void *src = string_buf;
	uint64_t count = 4;
	__asm__ volatile("rep outsb"
			 : "+S"(src), "+c"(count) : "d"((uint16_t)0x1234) : "memory");
	void *dst = string_buf;
	count = 4;
	__asm__ volatile("rep insb"
			 : "+D"(dst), "+c"(count) : "d"((uint16_t)0x1234) : "memory");

	/* A 4-byte write to the UART data port; every byte is '\n'. */
	outl(COM1_THR, 0x0a0a0a0a);
	(void)inl(COM1_THR);
	return 0;
}
