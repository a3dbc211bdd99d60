/*
 * Shared pieces of the flatgrid test guests: port I/O, the COM1 UART, the
 * boot-timer and result ports, and the i8042 reset that ends a guest.
 * See README.md for the VMM <-> guest contract.
 */
#ifndef FLATGRID_TESTGUEST_H
#define FLATGRID_TESTGUEST_H

#include <stddef.h>
#include <stdint.h>

#define COM1_THR         0x3f8   /* transmit holding register (write) */
#define COM1_LSR         0x3fd   /* line status register (read) */
#define COM1_LSR_THRE    0x20    /* transmit holding register empty */
#define BOOT_TIMER_PORT  0x3f0   /* outb 123: "guest init reached" */
#define BOOT_TIMER_VALUE 123
#define RESULT_PORT      0x3f1   /* outl: 32-bit result code, 0 = success */
#define I8042_CMD_PORT   0x64
#define I8042_RESET      0xfe

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outw(uint16_t port, uint16_t v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port) : "memory");
}

static inline uint8_t inb(uint16_t port)
{
	uint8_t v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint16_t inw(uint16_t port)
{
	uint16_t v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

static inline uint32_t inl(uint16_t port)
{
	uint32_t v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
	return v;
}

/* Each guest defines this; its return value is the result code. */
int guest_main(void);

void putc_serial(char c);
void puts_serial(const char *s);
void print_dec(uint64_t v);
void print_hex(uint64_t v);          /* "0x" + lowercase hex, no padding */

void report_result(uint32_t code);   /* outl(RESULT_PORT, code) */
__attribute__((noreturn)) void reset_vm(void);
__attribute__((noreturn)) void finish(uint32_t code);  /* report + reset */

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif
