/*
 * testguest-net: a minimal polled virtio-net driver (virtio-mmio, see
 * README.md) for the fixed address 10.214.0.2/24. It announces itself with a
 * gratuitous ARP, then answers ARP requests for its address and ICMP echo
 * requests to it until it has answered three pings, or about 20 s passed.
 * Frames are parsed by byte offset (network byte order); everything it does
 * not answer is dropped.
 */
#include "testguest.h"

#include <linux/virtio_net.h>

#define RX_QUEUE     0
#define TX_QUEUE     1
#define RX_BUFS      8          /* posted receive buffers */
#define TX_BUFS      4          /* transmit buffers, one descriptor each */
#define BUF_SIZE     2048       /* virtio-net header + frame */
#define HDR_LEN      sizeof(struct virtio_net_hdr_v1)   /* 12 with VERSION_1 */
#define PINGS        3
/* About 20 s on this host's 2.4 GHz TSC (TIMEOUT_TSC is ~4 s). */
#define NET_TIMEOUT_TSC (5 * TIMEOUT_TSC)

#define ARP_LEN      28         /* Ethernet/IPv4 ARP packet */
#define ARPOP_REQ    1
#define ARPOP_REP    2
#define IP_HLEN      20         /* our replies carry no options */
#define IP_PROTO_ICMP 1
#define ICMP_ECHO_REPLY   0
#define ICMP_ECHO_REQUEST 8
#define ICMP_HLEN    8          /* type, code, checksum, id, sequence */

_Static_assert(sizeof(struct virtio_net_hdr_v1) == 12, "virtio_net_hdr_v1 is 12 bytes");

/* Result codes. */
enum {
	FAIL_TIMEOUT = 1, FAIL_USED, FAIL_TX, FAIL_NO_DEVICE = 10, FAIL_SETUP,
};

static const uint8_t my_ip[4] = { 10, 214, 0, 2 };
static const uint8_t broadcast[ETH_ALEN] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
/* Used if the device does not offer VIRTIO_NET_F_MAC: locally administered. */
static const uint8_t fallback_mac[ETH_ALEN] = { 0x02, 0x00, 10, 214, 0, 2 };
static uint8_t my_mac[ETH_ALEN];

static struct virtq_mem rx_mem, tx_mem;
static struct virtio_dev dev;           /* dev.vq is not used */
static struct virtq rxq, txq;
static uint8_t rx_buf[RX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t tx_buf[TX_BUFS][BUF_SIZE] __attribute__((aligned(4096)));
static uint8_t rx_posted[RX_BUFS];      /* the device holds rx_buf[i] */
static uint8_t tx_busy[TX_BUFS];        /* the device holds tx_buf[i] */
static unsigned rx_count, tx_count;     /* min(*_BUFS, queue size) */
static unsigned pings;                  /* echo requests answered */
static unsigned bad_checksums;          /* echo requests dropped for them */
static int arp_replied;

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* Internet checksum (RFC 1071); 0 over data that includes a correct one. */
static uint16_t checksum(const uint8_t *p, uint32_t n)
{
	uint32_t sum = 0;

	for (; n > 1; n -= 2, p += 2)
		sum += get16(p);
	if (n)
		sum += (uint32_t)p[0] << 8;
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void print_mac(const uint8_t *mac)
{
	for (int i = 0; i < ETH_ALEN; i++) {
		if (i)
			putc_serial(':');
		putc_serial("0123456789abcdef"[mac[i] >> 4]);
		putc_serial("0123456789abcdef"[mac[i] & 0xf]);
	}
}

static int bad_used(const char *queue, uint32_t id)
{
	puts_serial("net: FAIL bad ");
	puts_serial(queue);
	puts_serial(" used entry ");
	print_dec(id);
	puts_serial("\n");
	return FAIL_USED;
}

/* Takes back the TX buffers the device has used. 0 or FAIL_USED. */
static int tx_reap(void)
{
	uint16_t used = *(volatile uint16_t *)&txq.used->idx;

	/* The index before the entries it publishes. */
	barrier();
	while (txq.used_idx != used) {
		volatile struct vring_used_elem *e = &txq.used->ring[txq.used_idx % txq.size];
		uint32_t id = e->id;
		if (id >= tx_count || !tx_busy[id])
			return bad_used("tx", id);
		tx_busy[id] = 0;
		txq.used_idx++;
	}
	return 0;
}

/*
 * Waits (TIMEOUT_TSC at most) until the device has returned one TX buffer, or
 * all of them. The index of a free one, or -FAIL_*.
 */
static int tx_wait(int all)
{
	uint64_t start = rdtsc();

	for (;;) {
		int r = tx_reap();
		if (r)
			return -r;
		int free = -1, busy = 0;
		for (unsigned i = 0; i < tx_count; i++) {
			if (tx_busy[i])
				busy = 1;
			else if (free < 0)
				free = (int)i;
		}
		if (all ? !busy : free >= 0)
			return free;
		if (rdtsc() - start > TIMEOUT_TSC) {
			puts_serial("net: FAIL tx buffers not returned\n");
			return -FAIL_TX;
		}
		cpu_relax();
	}
}

static int tx_alloc(void)
{
	return tx_wait(0);
}

/* The frame being built in a TX buffer, after the virtio-net header. */
static uint8_t *tx_frame(int slot)
{
	return tx_buf[slot] + HDR_LEN;
}

/* Sends the len-byte frame in tx_frame(slot), padded to ETH_ZLEN, all-zero header. */
static void tx_send(int slot, uint32_t len)
{
	memset(tx_buf[slot], 0, HDR_LEN);
	if (len < ETH_ZLEN) {
		memset(tx_frame(slot) + len, 0, ETH_ZLEN - len);
		len = ETH_ZLEN;
	}
	txq.desc[slot].len = HDR_LEN + len;   /* addr and flags (0) are set once */
	tx_busy[slot] = 1;
	virtq_publish(&txq, (uint16_t)slot);
}

/* Ethernet header: to dst, from us. */
static uint8_t *eth_header(uint8_t *f, const uint8_t *dst, uint16_t type)
{
	memcpy(f, dst, ETH_ALEN);
	memcpy(f + ETH_ALEN, my_mac, ETH_ALEN);
	put16(f + 2 * ETH_ALEN, type);
	return f + ETH_HLEN;
}

/* An ARP packet from us (sha, spa) to dst, with target tha, tpa. */
static int send_arp(uint16_t op, const uint8_t *dst, const uint8_t *tha, const uint8_t *tpa)
{
	int slot = tx_alloc();
	if (slot < 0)
		return -slot;
	uint8_t *a = eth_header(tx_frame(slot), dst, ETH_P_ARP);
	put16(a, 1);                   /* htype: Ethernet */
	put16(a + 2, ETH_P_IP);        /* ptype */
	a[4] = ETH_ALEN;
	a[5] = 4;
	put16(a + 6, op);
	memcpy(a + 8, my_mac, ETH_ALEN);
	memcpy(a + 14, my_ip, 4);
	memcpy(a + 18, tha, ETH_ALEN);
	memcpy(a + 24, tpa, 4);
	tx_send(slot, ETH_HLEN + ARP_LEN);
	return 0;
}

/* Answers an ARP request for our address. */
static int rx_arp(const uint8_t *a, uint32_t len)
{
	if (len < ARP_LEN || get16(a) != 1 || get16(a + 2) != ETH_P_IP || a[4] != ETH_ALEN ||
	    a[5] != 4 || get16(a + 6) != ARPOP_REQ || memcmp(a + 24, my_ip, 4) != 0)
		return 0;
	/* To the sender's hardware address, which is also the target's. */
	int r = send_arp(ARPOP_REP, a + 8, a + 8, a + 14);
	if (!r && !arp_replied) {
		arp_replied = 1;
		puts_serial("net: arp reply sent\n");
	}
	return r;
}

/* Answers an ICMP echo request to our address; eth is the request's Ethernet header. */
static int rx_ipv4(const uint8_t *eth, const uint8_t *ip, uint32_t len)
{
	if (len < IP_HLEN || ip[0] >> 4 != 4)
		return 0;
	uint32_t ihl = (ip[0] & 0xfu) * 4;
	uint32_t total = get16(ip + 2);
	if (ihl < IP_HLEN || total < ihl + ICMP_HLEN || total > len)
		return 0;
	/* Fragments (MF or an offset) are not reassembled: dropped. */
	if (ip[9] != IP_PROTO_ICMP || memcmp(ip + 16, my_ip, 4) != 0 || (get16(ip + 6) & 0x3fff))
		return 0;
	const uint8_t *icmp = ip + ihl;
	uint32_t icmp_len = total - ihl;
	if (icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0)
		return 0;
	if (checksum(ip, ihl) != 0 || checksum(icmp, icmp_len) != 0) {
		bad_checksums++;
		return 0;
	}

	/* The reply fits: 14 + 20 + icmp_len <= 14 + total <= the received frame. */
	int slot = tx_alloc();
	if (slot < 0)
		return -slot;
	uint8_t *rip = eth_header(tx_frame(slot), eth + ETH_ALEN, ETH_P_IP);
	rip[0] = 0x45;                 /* version 4, 20-byte header */
	rip[1] = ip[1];                /* TOS */
	put16(rip + 2, (uint16_t)(IP_HLEN + icmp_len));
	put16(rip + 4, get16(ip + 4)); /* identification */
	put16(rip + 6, 0);             /* flags, fragment offset */
	rip[8] = 64;                   /* TTL */
	rip[9] = IP_PROTO_ICMP;
	put16(rip + 10, 0);
	memcpy(rip + 12, my_ip, 4);
	memcpy(rip + 16, ip + 12, 4);
	put16(rip + 10, checksum(rip, IP_HLEN));
	uint8_t *ricmp = rip + IP_HLEN;
	memcpy(ricmp, icmp, icmp_len); /* id, sequence, payload */
	ricmp[0] = ICMP_ECHO_REPLY;
	ricmp[1] = 0;
	put16(ricmp + 2, 0);
	put16(ricmp + 2, checksum(ricmp, icmp_len));
	tx_send(slot, ETH_HLEN + IP_HLEN + icmp_len);
	pings++;
	return 0;
}

/* One received frame (without the virtio-net header). */
static int rx_frame(const uint8_t *f, uint32_t len)
{
	if (len < ETH_HLEN)
		return 0;
	if (memcmp(f, my_mac, ETH_ALEN) != 0 && memcmp(f, broadcast, ETH_ALEN) != 0)
		return 0;
	switch (get16(f + 2 * ETH_ALEN)) {
	case ETH_P_ARP:
		return rx_arp(f + ETH_HLEN, len - ETH_HLEN);
	case ETH_P_IP:
		return rx_ipv4(f, f + ETH_HLEN, len - ETH_HLEN);
	default:
		return 0;   /* IPv6, VLANs, ...: ignored */
	}
}

/* Handles every received frame, re-posts its buffer, notifies queue 0 once. */
static int rx_poll(void)
{
	uint16_t used = *(volatile uint16_t *)&rxq.used->idx;

	if (used == rxq.used_idx)
		return 0;
	/* The index before the entries it publishes. */
	barrier();
	while (rxq.used_idx != used) {
		volatile struct vring_used_elem *e = &rxq.used->ring[rxq.used_idx % rxq.size];
		uint32_t id = e->id;
		uint32_t len = e->len;   /* header + frame */
		if (id >= rx_count || !rx_posted[id])
			return bad_used("rx", id);
		rx_posted[id] = 0;
		rxq.used_idx++;
		if (len > HDR_LEN && len <= BUF_SIZE) {
			int r = rx_frame(rx_buf[id] + HDR_LEN, len - HDR_LEN);
			if (r)
				return r;
		}
		rx_posted[id] = 1;
		virtq_make_available(&rxq, (uint16_t)id);
	}
	virtq_notify(&rxq);
	return 0;
}

/*
 * Features, both queues, the MAC, receive buffers posted, DRIVER_OK, then
 * queue 0 notified (3.1.1, 5.1.5). NULL or why it failed.
 */
static const char *setup(uint64_t base)
{
	const char *why = virtio_negotiate(&dev, base,
					   1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_RING_F_EVENT_IDX);
	if (!why)
		why = virtq_setup(&dev, &rxq, RX_QUEUE, &rx_mem);
	if (!why)
		why = virtq_setup(&dev, &txq, TX_QUEUE, &tx_mem);
	if (why)
		return why;

	if (dev.features & (1ULL << VIRTIO_NET_F_MAC)) {
		/* struct virtio_net_config starts with u8 mac[6]: bytes 0-3, then 4-5. */
		uint64_t cfg = virtio_config_read64(&dev, 0);
		for (int i = 0; i < ETH_ALEN; i++)
			my_mac[i] = (uint8_t)(cfg >> (8 * i));
	} else {
		memcpy(my_mac, fallback_mac, ETH_ALEN);
	}

	tx_count = txq.size < TX_BUFS ? txq.size : TX_BUFS;
	for (unsigned i = 0; i < tx_count; i++) {
		txq.desc[i].addr = (uint64_t)(uintptr_t)tx_buf[i];
		txq.desc[i].flags = 0;   /* device-readable */
	}
	rx_count = rxq.size < RX_BUFS ? rxq.size : RX_BUFS;
	for (unsigned i = 0; i < rx_count; i++) {
		rxq.desc[i].addr = (uint64_t)(uintptr_t)rx_buf[i];
		rxq.desc[i].len = BUF_SIZE;
		rxq.desc[i].flags = VRING_DESC_F_WRITE;
		rx_posted[i] = 1;
		virtq_make_available(&rxq, (uint16_t)i);
	}

	why = virtio_driver_ok(&dev);
	if (why)
		return why;
	virtq_notify(&rxq);
	return NULL;
}

static void print_bad_checksums(void)
{
	if (!bad_checksums)
		return;
	puts_serial("net: ignored ");
	print_dec(bad_checksums);
	puts_serial(" bad checksums\n");
}

int guest_main(void)
{
	int r;

	map_4gib();
	uint64_t base = virtio_find(VIRTIO_ID_NET);
	if (!base) {
		puts_serial("net: FAIL no virtio-net device\n");
		return FAIL_NO_DEVICE;
	}
	const char *why = setup(base);
	if (why) {
		puts_serial("net: FAIL setup: ");
		puts_serial(why);
		puts_serial("\n");
		return FAIL_SETUP;
	}
	puts_serial("net: mac ");
	print_mac(my_mac);
	if (!(dev.features & (1ULL << VIRTIO_NET_F_MAC)))
		puts_serial(" (VIRTIO_NET_F_MAC not offered)");
	puts_serial("\n");
	if (rxq.event_idx)
		puts_serial("net: event idx on\n");

	/* Gratuitous ARP: a broadcast request for our own address. */
	static const uint8_t zero_mac[ETH_ALEN];
	if ((r = send_arp(ARPOP_REQ, broadcast, zero_mac, my_ip)))
		return r;
	puts_serial("net: sent gratuitous arp\n");

	uint64_t start = rdtsc();
	while (pings < PINGS) {
		if (rdtsc() - start > NET_TIMEOUT_TSC) {
			print_bad_checksums();
			puts_serial("net: FAIL timeout (");
			print_dec(pings);
			puts_serial(" pings)\n");
			return FAIL_TIMEOUT;
		}
		if ((r = rx_poll()) || (r = tx_reap()))
			return r;
		cpu_relax();
	}

	/* The last reply must have left before the reset ends the VM. */
	if ((r = tx_wait(1)) < 0)
		return -r;
	print_bad_checksums();
	puts_serial("net: answered 3 pings\n");
	return 0;
}
