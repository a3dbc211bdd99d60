/*
 * Shared pieces of the flatgrid test guests: port I/O, the COM1 UART, the
 * boot-timer and result ports, the i8042 reset that ends a guest, MMIO, the
 * 0-4 GiB page tables and a polled virtio-mmio driver.
 * See README.md for the VMM <-> guest contract.
 */
#ifndef FLATGRID_TESTGUEST_H
#define FLATGRID_TESTGUEST_H

#include <stddef.h>
#include <stdint.h>
#include <linux/virtio_config.h>
#include <linux/virtio_mmio.h>
#include <linux/virtio_ring.h>

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

static inline uint32_t mmio_read32(uint64_t addr)
{
	uint32_t v;
	__asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(addr) : "memory");
	return v;
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	__asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" : : : "memory");
}

/* Keeps the compiler from moving memory accesses across it (x86 keeps stores in order). */
static inline void barrier(void)
{
	__asm__ volatile("" : : : "memory");
}

/* A full fence: a store before it is visible before any load after it (x86 reorders those). */
static inline void mb(void)
{
	__asm__ volatile("mfence" : : : "memory");
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

/*
 * Loads page tables (in common.c's .bss) that identity-map 0-4 GiB with 2 MiB
 * pages, 3-4 GiB uncached (PCD|PWT): MMIO devices, LAPIC, IOAPIC.
 */
void map_4gib(void);

/* Written by the VMM before entry (see README.md). */
#define RAM_SIZE_ADDR  0x6ff8UL   /* u64: guest RAM size in bytes */
#define CPU_COUNT_ADDR 0x6ff0UL   /* u32: number of vCPUs */

/*
 * Timeouts are in TSC ticks: 10^10 is 2.5 s at 4 GHz and 10 s at 1 GHz,
 * emulated or not (the TSC follows wall-clock time).
 */
#define TIMEOUT_TSC 10000000000ULL

/*
 * virtio-mmio version 2 (virtio 1.2, 4.2), polled: a minimal driver for split
 * virtqueues (queue 0; net also sets up queue 1) and virtio-blk requests on
 * queue 0. Only 32-bit accesses to the registers; see README.md.
 */
#define VIRTIO_MMIO_BASE   0xd0000000UL
#define VIRTIO_MMIO_STRIDE 0x1000UL
#define VIRTIO_MMIO_SLOTS  8
#define VIRTIO_MMIO_MAGIC  0x74726976   /* "virt" */
#define VQ_MAX_SIZE        16

/* Queue memory, zeroed by virtio_setup: each part in its own page. */
struct virtq_mem {
	uint8_t desc[4096];
	uint8_t avail[4096];
	uint8_t used[4096];
} __attribute__((aligned(4096)));

struct virtq {
	uint64_t notify;           /* address of the QueueNotify register */
	uint16_t index;            /* queue number */
	uint16_t size;
	uint16_t avail_idx;        /* next avail->idx to publish */
	uint16_t used_idx;         /* used entries consumed so far */
	uint16_t kicked_idx;       /* avail_idx when the device was last notified */
	int event_idx;             /* VIRTIO_RING_F_EVENT_IDX negotiated */
	struct vring_desc *desc;
	struct vring_avail *avail;
	struct vring_used *used;
};

struct virtio_dev {
	uint64_t base;
	uint64_t offered;          /* device features */
	uint64_t features;         /* negotiated */
	struct virtq vq;
};

/* One buffer of a request: flags is 0 (device reads) or VRING_DESC_F_WRITE. */
struct vq_buf {
	const volatile void *addr;
	uint32_t len;
	uint16_t flags;
};

#define VQ_TIMEOUT  (-1)   /* the used ring did not move */
#define VQ_BAD_USED (-2)   /* the used entry is not our chain's head */
#define VQ_TOO_LONG (-3)   /* more buffers than queue entries */

/* Base of the first device with device_id (after magic, version 2), or 0. */
uint64_t virtio_find(uint32_t device_id);
/* Writes 0 to Status and waits for it to read 0; 0 or -1. */
int virtio_reset(struct virtio_dev *d);
/*
 * Full initialisation (3.1.1, 4.2.3): reset, ACKNOWLEDGE, DRIVER, features
 * (VIRTIO_F_VERSION_1 plus those in accept that the device offers),
 * FEATURES_OK, queue 0 (size min(QueueNumMax, VQ_MAX_SIZE) rounded down to a
 * power of two), DRIVER_OK. NULL on success, else why it failed (FAILED is
 * then set in Status). It is the three steps below in order; a device with
 * more queues calls them itself, with virtq_setup once per queue.
 */
const char *virtio_setup(struct virtio_dev *d, uint64_t base, uint64_t accept,
			 struct virtq_mem *mem);
/* Reset up to FEATURES_OK (checked); sets d->base, d->offered, d->features. */
const char *virtio_negotiate(struct virtio_dev *d, uint64_t base, uint64_t accept);
/* Queue index (0 or 1) in mem, as for queue 0 above, ending with QueueReady 1. */
const char *virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index,
			struct virtq_mem *mem);
/* Sets DRIVER_OK and checks it stuck without DEVICE_NEEDS_RESET. */
const char *virtio_driver_ok(struct virtio_dev *d);
uint32_t virtio_read(const struct virtio_dev *d, uint32_t reg);
void virtio_write(const struct virtio_dev *d, uint32_t reg, uint32_t v);
/* A 64-bit config field (offset from 0x100) as two 32-bit reads, generation-checked. */
uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t offset);
/* Puts head in the available ring and publishes avail->idx (no notify). */
void virtq_make_available(struct virtq *q, uint16_t head);
/*
 * Writes the queue's index to QueueNotify; with VIRTIO_RING_F_EVENT_IDX only when the
 * device asked for it (its avail_event is among the entries made available since the last
 * notification), as Linux's driver does: a device that forgets to ask is never notified.
 */
void virtq_notify(struct virtq *q);
/* virtq_make_available, then virtq_notify. */
void virtq_publish(struct virtq *q, uint16_t head);
/* Polls for the next used entry (TIMEOUT_TSC); 0 and its len, or VQ_TIMEOUT/VQ_BAD_USED. */
int virtq_wait(struct virtq *q, uint16_t head, uint32_t *len);
/* One chain in descriptors 0..n-1 (NEXT-linked), published and waited for. */
int virtq_submit(struct virtq *q, const struct vq_buf *bufs, unsigned n);
/*
 * A virtio-blk request: 16-byte header, data buffers, 1-byte status. Returns
 * the status byte the device wrote (0xff if it wrote none) or a VQ_* error.
 */
int virtio_blk_request(struct virtio_dev *d, uint32_t type, uint64_t sector,
		       const struct vq_buf *data, unsigned n);

/* gcc may emit calls to these even when freestanding. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);

#endif
