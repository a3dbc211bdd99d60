/*
 * testguest-blk: a minimal polled virtio-blk driver (virtio-mmio, see
 * README.md). It reads the capacity and the label in sector 0, checks
 * read-only disks refuse writes, writes and reads back sectors 1-8, flushes,
 * reads past the end, and counts boots in sector 9. One line per step; the
 * first failing step ends the run with its number as the result.
 */
#include "testguest.h"

#include <linux/virtio_blk.h>

#define SECTOR       512
#define RW_SECTOR    1          /* sectors 1..8: the write/read-back test */
#define RW_BYTES     4096
#define COUNT_SECTOR 9          /* u32 boot counter in its first 4 bytes */
#define MIN_SECTORS  10
#define LABEL_MAX    60

/* Result codes: a failing step returns its number. */
enum {
	FAIL_CAPACITY = 1, FAIL_LABEL, FAIL_READONLY, FAIL_RW, FAIL_FLUSH,
	FAIL_RANGE, FAIL_COUNT, FAIL_NO_DEVICE = 10, FAIL_SETUP,
};

static struct virtq_mem vq_mem;
static struct virtio_dev dev;
static uint8_t wbuf[RW_BYTES] __attribute__((aligned(4096)));
static uint8_t rbuf[RW_BYTES] __attribute__((aligned(4096)));
static uint8_t sector_buf[SECTOR] __attribute__((aligned(512)));

/* The u32 at byte offset off of the disk: differs in every word and byte. */
static uint32_t pattern(uint64_t off)
{
	return (uint32_t)off * 0x9e3779b1u + 0x5a5a5a5au;
}

/* "blk: FAIL <what>: status N" (or the queue error), returns code. */
static int fail(int code, const char *what, int r)
{
	puts_serial("blk: FAIL ");
	puts_serial(what);
	if (r == VQ_TIMEOUT) {
		puts_serial(": timeout");
	} else if (r == VQ_BAD_USED) {
		puts_serial(": bad used entry");
	} else if (r == VQ_TOO_LONG) {
		puts_serial(": queue too small");
	} else if (r >= 0) {
		puts_serial(": status ");
		print_dec((uint64_t)r);
	}
	puts_serial("\n");
	return code;
}

static int rw_sector(uint32_t type, uint64_t sector, void *buf)
{
	struct vq_buf data = {
		buf, SECTOR, type == VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0
	};
	return virtio_blk_request(&dev, type, sector, &data, 1);
}

static void print_label(const uint8_t *s)
{
	puts_serial("blk: label ");
	for (int i = 0; i < LABEL_MAX && s[i] && s[i] != '\n'; i++)
		putc_serial(s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?');
	puts_serial("\n");
}

static int write_read_back(void)
{
	uint32_t *w = (uint32_t *)wbuf;
	uint32_t *r = (uint32_t *)rbuf;
	uint64_t base = (uint64_t)RW_SECTOR * SECTOR;

	for (uint32_t i = 0; i < RW_BYTES / 4; i++) {
		w[i] = pattern(base + 4 * i);
		r[i] = 0xeeeeeeee;
	}

	/* One 4 KiB descriptor out, 1 KiB + 3 KiB back in. */
	struct vq_buf out = { wbuf, RW_BYTES, 0 };
	int st = virtio_blk_request(&dev, VIRTIO_BLK_T_OUT, RW_SECTOR, &out, 1);
	if (st != VIRTIO_BLK_S_OK)
		return fail(FAIL_RW, "write sectors 1-8", st);
	struct vq_buf in[2] = {
		{ rbuf, 1024, VRING_DESC_F_WRITE },
		{ rbuf + 1024, RW_BYTES - 1024, VRING_DESC_F_WRITE },
	};
	st = virtio_blk_request(&dev, VIRTIO_BLK_T_IN, RW_SECTOR, in, 2);
	if (st != VIRTIO_BLK_S_OK)
		return fail(FAIL_RW, "read sectors 1-8", st);
	for (uint32_t i = 0; i < RW_BYTES / 4; i++) {
		if (r[i] != pattern(base + 4 * i)) {
			puts_serial("blk: FAIL read back differs at disk offset ");
			print_hex(base + 4 * i);
			puts_serial("\n");
			return FAIL_RW;
		}
	}
	puts_serial("blk: rw ok\n");
	return 0;
}

int guest_main(void)
{
	int st;

	map_4gib();
	uint64_t base = virtio_find(VIRTIO_ID_BLOCK);
	if (!base) {
		puts_serial("blk: FAIL no virtio-blk device\n");
		return FAIL_NO_DEVICE;
	}
	const char *why = virtio_setup(&dev, base,
				       1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_RING_F_EVENT_IDX,
				       &vq_mem);
	if (why) {
		puts_serial("blk: FAIL setup: ");
		puts_serial(why);
		puts_serial("\n");
		return FAIL_SETUP;
	}
	int ro = (dev.features & (1ULL << VIRTIO_BLK_F_RO)) != 0;
	if (dev.vq.event_idx)
		puts_serial("blk: event idx on\n");

	/* 1. Capacity (struct virtio_blk_config starts with le64 capacity). */
	uint64_t capacity = virtio_config_read64(&dev, 0);
	puts_serial("blk: capacity ");
	print_dec(capacity);
	puts_serial(" sectors\n");
	if (capacity < MIN_SECTORS) {
		puts_serial("blk: FAIL need at least 10 sectors\n");
		return FAIL_CAPACITY;
	}

	/* 2. The label in sector 0. */
	st = rw_sector(VIRTIO_BLK_T_IN, 0, sector_buf);
	if (st != VIRTIO_BLK_S_OK)
		return fail(FAIL_LABEL, "read sector 0", st);
	print_label(sector_buf);

	if (ro) {
		/* 3. A read-only disk refuses writes. */
		st = rw_sector(VIRTIO_BLK_T_OUT, RW_SECTOR, sector_buf);
		if (st != VIRTIO_BLK_S_IOERR)
			return fail(FAIL_READONLY, "write to read-only disk", st);
		puts_serial("blk: read-only ok\n");
	} else {
		/* 4. Write sectors 1-8, read them back. */
		int r = write_read_back();
		if (r)
			return r;

		/* 5. Flush: header and status only, sector 0. */
		st = virtio_blk_request(&dev, VIRTIO_BLK_T_FLUSH, 0, NULL, 0);
		if (st != VIRTIO_BLK_S_OK)
			return fail(FAIL_FLUSH, "flush", st);
		puts_serial("blk: flush ok\n");

		/* 6. One sector past the end. */
		st = rw_sector(VIRTIO_BLK_T_IN, capacity, sector_buf);
		if (st != VIRTIO_BLK_S_IOERR)
			return fail(FAIL_RANGE, "read past the end", st);
		puts_serial("blk: range ok\n");
	}

	/* 7. Boot counter. */
	st = rw_sector(VIRTIO_BLK_T_IN, COUNT_SECTOR, sector_buf);
	if (st != VIRTIO_BLK_S_OK)
		return fail(FAIL_COUNT, "read sector 9", st);
	uint32_t *counter = (uint32_t *)sector_buf;
	if (!ro) {
		(*counter)++;
		st = rw_sector(VIRTIO_BLK_T_OUT, COUNT_SECTOR, sector_buf);
		if (st != VIRTIO_BLK_S_OK)
			return fail(FAIL_COUNT, "write sector 9", st);
	}
	puts_serial("blk: boot count ");
	print_dec(*counter);
	puts_serial("\n");
	return 0;
}
