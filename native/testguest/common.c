/* Shared code of the flatgrid test guests. */
#include "testguest.h"

#include <linux/virtio_blk.h>

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

#define PTE_P   0x001UL
#define PTE_RW  0x002UL
#define PTE_PWT 0x008UL
#define PTE_PCD 0x010UL
#define PTE_PS  0x080UL   /* 2 MiB page in a page directory entry */

/* Identity map of 0-4 GiB with 2 MiB pages: 1 PML4, 1 PDPT, 4 PDs. */
static uint64_t pml4[512] __attribute__((aligned(4096)));
static uint64_t pdpt[512] __attribute__((aligned(4096)));
static uint64_t pd[4][512] __attribute__((aligned(4096)));

void map_4gib(void)
{
	for (uint64_t g = 0; g < 4; g++) {
		for (uint64_t i = 0; i < 512; i++) {
			uint64_t addr = (g << 30) | (i << 21);
			uint64_t flags = PTE_P | PTE_RW | PTE_PS;
			if (g == 3)   /* 3-4 GiB: MMIO hole, uncached */
				flags |= PTE_PCD | PTE_PWT;
			pd[g][i] = addr | flags;
		}
		pdpt[g] = (uint64_t)(uintptr_t)pd[g] | PTE_P | PTE_RW;
	}
	pml4[0] = (uint64_t)(uintptr_t)pdpt | PTE_P | PTE_RW;
	__asm__ volatile("mov %0, %%cr3" : : "r"((uint64_t)(uintptr_t)pml4)
			 : "memory");
}

/* virtio-mmio: see testguest.h. */

/* Reads of Status while waiting for a reset to complete. */
#define VIRTIO_RESET_POLL_LIMIT 1000

uint32_t virtio_read(const struct virtio_dev *d, uint32_t reg)
{
	return mmio_read32(d->base + reg);
}

void virtio_write(const struct virtio_dev *d, uint32_t reg, uint32_t v)
{
	mmio_write32(d->base + reg, v);
}

uint64_t virtio_find(uint32_t device_id)
{
	for (uint64_t i = 0; i < VIRTIO_MMIO_SLOTS; i++) {
		uint64_t base = VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE;
		/* An empty slot reads 0 or all ones. */
		if (mmio_read32(base + VIRTIO_MMIO_MAGIC_VALUE) != VIRTIO_MMIO_MAGIC)
			continue;
		if (mmio_read32(base + VIRTIO_MMIO_VERSION) != 2)
			continue;
		if (mmio_read32(base + VIRTIO_MMIO_DEVICE_ID) == device_id)
			return base;
	}
	return 0;
}

int virtio_reset(struct virtio_dev *d)
{
	virtio_write(d, VIRTIO_MMIO_STATUS, 0);
	for (int i = 0; i < VIRTIO_RESET_POLL_LIMIT; i++)
		if (virtio_read(d, VIRTIO_MMIO_STATUS) == 0)
			return 0;
	return -1;
}

static const char *virtio_fail(struct virtio_dev *d, const char *why)
{
	virtio_write(d, VIRTIO_MMIO_STATUS,
		     virtio_read(d, VIRTIO_MMIO_STATUS) | VIRTIO_CONFIG_S_FAILED);
	return why;
}

static void zero(volatile void *p, size_t n)
{
	volatile uint8_t *b = p;
	while (n--)
		*b++ = 0;
}

/* Status bits of a driver that has negotiated features (3.1.1 steps 1-6). */
#define VIRTIO_STATUS_NEGOTIATED \
	(VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK)

const char *virtio_negotiate(struct virtio_dev *d, uint64_t base, uint64_t accept)
{
	uint32_t status;

	d->base = base;
	if (virtio_reset(d))
		return "reset did not complete";
	status = VIRTIO_CONFIG_S_ACKNOWLEDGE;
	virtio_write(d, VIRTIO_MMIO_STATUS, status);
	status |= VIRTIO_CONFIG_S_DRIVER;
	virtio_write(d, VIRTIO_MMIO_STATUS, status);

	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	d->offered = virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	virtio_write(d, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	d->offered |= (uint64_t)virtio_read(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	if (!(d->offered & (1ULL << VIRTIO_F_VERSION_1)))
		return virtio_fail(d, "VIRTIO_F_VERSION_1 not offered");
	d->features = d->offered & (accept | 1ULL << VIRTIO_F_VERSION_1);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)d->features);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	virtio_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(d->features >> 32));
	status |= VIRTIO_CONFIG_S_FEATURES_OK;
	virtio_write(d, VIRTIO_MMIO_STATUS, status);
	if (!(virtio_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_FEATURES_OK))
		return virtio_fail(d, "FEATURES_OK not accepted");
	return NULL;
}

const char *virtq_setup(struct virtio_dev *d, struct virtq *q, uint16_t index,
			struct virtq_mem *mem)
{
	/* 4.2.3.2; our guests use queues 0 and 1 only, as the messages say. */
	virtio_write(d, VIRTIO_MMIO_QUEUE_SEL, index);
	if (virtio_read(d, VIRTIO_MMIO_QUEUE_READY) != 0)
		return virtio_fail(d, index ? "queue 1 already ready" : "queue 0 already ready");
	uint32_t max = virtio_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (max == 0)
		return virtio_fail(d, index ? "queue 1 not available" : "queue 0 not available");
	uint16_t size = VQ_MAX_SIZE;
	while (size > max)
		size >>= 1;

	q->notify = d->base + VIRTIO_MMIO_QUEUE_NOTIFY;
	q->index = index;
	q->size = size;
	q->avail_idx = 0;
	q->used_idx = 0;
	q->kicked_idx = 0;
	q->event_idx = (d->features & (1ULL << VIRTIO_RING_F_EVENT_IDX)) != 0;
	q->desc = (struct vring_desc *)mem->desc;
	q->avail = (struct vring_avail *)mem->avail;
	q->used = (struct vring_used *)mem->used;
	zero(mem->desc, sizeof(struct vring_desc) * size);
	zero(mem->avail, 6 + 2 * size);   /* flags, idx, ring[size], used_event */
	zero(mem->used, 6 + 8 * size);    /* flags, idx, ring[size], avail_event */
	/* We poll: no interrupts, please (2.7.7). */
	q->avail->flags = VRING_AVAIL_F_NO_INTERRUPT;

	uint64_t desc = (uintptr_t)mem->desc;
	uint64_t avail = (uintptr_t)mem->avail;
	uint64_t used = (uintptr_t)mem->used;
	virtio_write(d, VIRTIO_MMIO_QUEUE_NUM, size);
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)desc);
	virtio_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(desc >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
	virtio_write(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
	virtio_write(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
	virtio_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return NULL;
}

const char *virtio_driver_ok(struct virtio_dev *d)
{
	virtio_write(d, VIRTIO_MMIO_STATUS,
		     VIRTIO_STATUS_NEGOTIATED | VIRTIO_CONFIG_S_DRIVER_OK);
	uint32_t status = virtio_read(d, VIRTIO_MMIO_STATUS);
	if (status & VIRTIO_CONFIG_S_NEEDS_RESET)
		return virtio_fail(d, "device needs reset after DRIVER_OK");
	if (!(status & VIRTIO_CONFIG_S_DRIVER_OK))
		return virtio_fail(d, "DRIVER_OK did not stick");
	return NULL;
}

const char *virtio_setup(struct virtio_dev *d, uint64_t base, uint64_t accept,
			 struct virtq_mem *mem)
{
	const char *why = virtio_negotiate(d, base, accept);
	if (!why)
		why = virtq_setup(d, &d->vq, 0, mem);
	if (!why)
		why = virtio_driver_ok(d);
	return why;
}

uint64_t virtio_config_read64(const struct virtio_dev *d, uint32_t offset)
{
	uint32_t gen, lo, hi;
	int tries = 0;

	do {
		gen = virtio_read(d, VIRTIO_MMIO_CONFIG_GENERATION);
		lo = virtio_read(d, VIRTIO_MMIO_CONFIG + offset);
		hi = virtio_read(d, VIRTIO_MMIO_CONFIG + offset + 4);
	} while (gen != virtio_read(d, VIRTIO_MMIO_CONFIG_GENERATION) && ++tries < 100);
	return (uint64_t)hi << 32 | lo;
}

void virtq_make_available(struct virtq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->size] = head;
	/* The ring entry (and the descriptors) before the index that publishes them. */
	barrier();
	q->avail_idx++;
	*(volatile uint16_t *)&q->avail->idx = q->avail_idx;
}

void virtq_notify(struct virtq *q)
{
	if (q->event_idx) {
		uint16_t old = q->kicked_idx, now = q->avail_idx;
		/* avail->idx is written; the device's avail_event must be read after it is seen. */
		mb();
		/* avail_event: the u16 after the used ring's entries (flags, idx, ring[size]). */
		volatile uint16_t *event_at =
			(volatile uint16_t *)((volatile uint8_t *)q->used + 4 + 8 * q->size);
		uint16_t event = *event_at;
		q->kicked_idx = now;
		/* vring_need_event (2.7.10). */
		if ((uint16_t)(now - event - 1) >= (uint16_t)(now - old))
			return;
	}
	mmio_write32(q->notify, q->index);
}

void virtq_publish(struct virtq *q, uint16_t head)
{
	virtq_make_available(q, head);
	virtq_notify(q);
}

int virtq_wait(struct virtq *q, uint16_t head, uint32_t *len)
{
	uint64_t start = rdtsc();

	while (*(volatile uint16_t *)&q->used->idx == q->used_idx) {
		if (rdtsc() - start > TIMEOUT_TSC)
			return VQ_TIMEOUT;
		cpu_relax();
	}
	/* The index before the entry it publishes. */
	barrier();
	volatile struct vring_used_elem *e = &q->used->ring[q->used_idx % q->size];
	uint32_t id = e->id;
	if (len)
		*len = e->len;
	q->used_idx++;
	return id == head ? 0 : VQ_BAD_USED;
}

int virtq_submit(struct virtq *q, const struct vq_buf *bufs, unsigned n)
{
	if (n == 0 || n > q->size)
		return VQ_TOO_LONG;
	for (unsigned i = 0; i < n; i++) {
		int more = i + 1 < n;
		q->desc[i].addr = (uint64_t)(uintptr_t)bufs[i].addr;
		q->desc[i].len = bufs[i].len;
		q->desc[i].flags = bufs[i].flags | (more ? VRING_DESC_F_NEXT : 0);
		q->desc[i].next = more ? (uint16_t)(i + 1) : 0;
	}
	virtq_publish(q, 0);
	return virtq_wait(q, 0, NULL);
}

static struct virtio_blk_outhdr blk_header __attribute__((aligned(16)));
static volatile uint8_t blk_status;

int virtio_blk_request(struct virtio_dev *d, uint32_t type, uint64_t sector,
		       const struct vq_buf *data, unsigned n)
{
	struct vq_buf bufs[VQ_MAX_SIZE];

	if (n + 2 > VQ_MAX_SIZE)
		return VQ_TOO_LONG;
	blk_header.type = type;
	blk_header.ioprio = 0;   /* "reserved" in virtio 1.2 */
	blk_header.sector = sector;
	blk_status = 0xff;
	bufs[0] = (struct vq_buf){ &blk_header, sizeof(blk_header), 0 };
	for (unsigned i = 0; i < n; i++)
		bufs[1 + i] = data[i];
	bufs[n + 1] = (struct vq_buf){ &blk_status, 1, VRING_DESC_F_WRITE };
	int r = virtq_submit(&d->vq, bufs, n + 2);
	return r < 0 ? r : blk_status;
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
