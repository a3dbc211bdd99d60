/* Shared code of the flatgrid test guests. */
#include "testguest.h"

/* Give up waiting for THRE after this many LSR reads and write anyway. */
#define SERIAL_POLL_LIMIT 1000000

__attribute__((noreturn)) void tg_start(void);

/* Called from start.S with a valid stack. */
void tg_start(void)
{
	outb(BOOT_TIMER_PORT, BOOT_TIMER_VALUE);
	finish((uint32_t)guest_main());
}

void putc_serial(char c)
{
	for (uint32_t i = 0; i < SERIAL_POLL_LIMIT; i++)
		if (inb(COM1_LSR) & COM1_LSR_THRE)
			break;
	outb(COM1_THR, (uint8_t)c);
}

void puts_serial(const char *s)
{
	while (*s)
		putc_serial(*s++);
}

void print_dec(uint64_t v)
{
	char buf[21];
	int i = sizeof(buf);

	buf[--i] = '\0';
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	puts_serial(&buf[i]);
}

void print_hex(uint64_t v)
{
	char buf[19];
	int i = sizeof(buf);

	buf[--i] = '\0';
	do {
		buf[--i] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v);
	buf[--i] = 'x';
	buf[--i] = '0';
	puts_serial(&buf[i]);
}

void report_result(uint32_t code)
{
	outl(RESULT_PORT, code);
}

void reset_vm(void)
{
	outb(I8042_CMD_PORT, I8042_RESET);
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}

void finish(uint32_t code)
{
	report_result(code);
	reset_vm();
}

void *memset(void *d, int c, size_t n)
{
	unsigned char *p = d;
	while (n--)
		*p++ = (unsigned char)c;
	return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;
	while (n--)
		*dp++ = *sp++;
	return d;
}

void *memmove(void *d, const void *s, size_t n)
{
	unsigned char *dp = d;
	const unsigned char *sp = s;
	if (dp < sp) {
		while (n--)
			*dp++ = *sp++;
	} else {
		while (n--)
			dp[n] = sp[n];
	}
	return d;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const unsigned char *x = a, *y = b;
	for (; n; n--, x++, y++)
		if (*x != *y)
			return *x - *y;
	return 0;
}
