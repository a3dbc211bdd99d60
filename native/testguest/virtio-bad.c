/*
 * testguest-virtio-bad: malformed virtqueues on the virtio-blk device. A
 * descriptor chain that loops, then (after a reset and a good read) an
 * available index far ahead of the ring: each must make the device set
 * DEVICE_NEEDS_RESET instead of hanging or crashing the VMM.
 */
#include "testguest.h"

#include <linux/virtio_blk.h>

/* Result codes. */
enum {
	FAIL_LOOP = 1, FAIL_RECOVER, FAIL_INDEX, FAIL_NO_DEVICE = 10, FAIL_SETUP,
};

static struct virtq_mem vq_mem;
static struct virtio_dev dev;
static uint8_t buf[512] __attribute__((aligned(512)));

/* Polls Status for DEVICE_NEEDS_RESET, briefly (a tenth of TIMEOUT_TSC). */
static int needs_reset(void)
{
	uint64_t start = rdtsc();

	do {
		if (virtio_read(&dev, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET)
			return 1;
	} while (rdtsc() - start < TIMEOUT_TSC / 10);
	return 0;
}

static int setup(void)
{
	const char *why = virtio_setup(&dev, dev.base, 1ULL << VIRTIO_BLK_F_RO, &vq_mem);
	if (why) {
		puts_serial("virtio-bad: FAIL setup: ");
		puts_serial(why);
		puts_serial("\n");
		return FAIL_SETUP;
	}
	return 0;
}

int guest_main(void)
{
	struct virtq *q = &dev.vq;
	int r;

	map_4gib();
	dev.base = virtio_find(VIRTIO_ID_BLOCK);
	if (!dev.base) {
		puts_serial("virtio-bad: FAIL no virtio-blk device\n");
		return FAIL_NO_DEVICE;
	}
	if ((r = setup()))
		return r;

	/* desc 0 -> desc 1 -> desc 0 -> ... */
	q->desc[0].addr = (uint64_t)(uintptr_t)buf;
	q->desc[0].len = 16;
	q->desc[0].flags = VRING_DESC_F_NEXT;
	q->desc[0].next = 1;
	q->desc[1].addr = (uint64_t)(uintptr_t)buf + 16;
	q->desc[1].len = 16;
	q->desc[1].flags = VRING_DESC_F_NEXT;
	q->desc[1].next = 0;
	virtq_publish(q, 0);
	if (!needs_reset()) {
		puts_serial("virtio-bad: FAIL looping chain: no DEVICE_NEEDS_RESET\n");
		return FAIL_LOOP;
	}
	puts_serial("virtio-bad: needs reset ok\n");

	/* Reset, set up again from scratch, read sector 0. */
	if ((r = setup()))
		return r;
	struct vq_buf data = { buf, sizeof(buf), VRING_DESC_F_WRITE };
	r = virtio_blk_request(&dev, VIRTIO_BLK_T_IN, 0, &data, 1);
	if (r != VIRTIO_BLK_S_OK) {
		puts_serial("virtio-bad: FAIL read after reset: ");
		if (r < 0) {
			puts_serial(r == VQ_TIMEOUT ? "timeout" : "queue error");
		} else {
			puts_serial("status ");
			print_dec((uint64_t)r);
		}
		puts_serial("\n");
		return FAIL_RECOVER;
	}
	puts_serial("virtio-bad: recovered ok\n");

	/* avail->idx 1000 entries ahead of a 16-entry (or smaller) ring. */
	q->avail_idx += 1000;
	*(volatile uint16_t *)&q->avail->idx = q->avail_idx;
	mmio_write32(q->notify, q->index);
	if (!needs_reset()) {
		puts_serial("virtio-bad: FAIL index +1000: no DEVICE_NEEDS_RESET\n");
		return FAIL_INDEX;
	}
	puts_serial("virtio-bad: bad index ok\n");

	virtio_reset(&dev);
	return 0;
}
