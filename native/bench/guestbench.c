/*
 * guestbench: what `npm run bench -- vmm` runs inside a microVM, the same binary under our
 * monitor and under QEMU (busybox has no fio and no iperf). Static, so it runs in a busybox
 * initrd. Every line it prints starts with "fgbench:" and is key=value, for the bench's parser.
 *   guestbench mark                     the boot marker: writes Firecracker's boot-timer value
 *                                       (123) to port 0x3f0 and says "fgbench: init"
 *   guestbench blk DEV SECONDS          sequential 1 MiB writes for 2 s as a warm-up, then
 *                                       sequential 1 MiB writes and reads, then 4 KiB random
 *                                       reads and writes, each for SECONDS, with O_DIRECT
 *                                       (the guest's page cache left out), one request at a
 *                                       time: MB/s and IOPS of the device path
 *   guestbench net-recv PORT            accept one TCP connection, read it to its end
 *   guestbench net-send HOST PORT SECS  connect (retrying for 60 s) and send for SECS
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BOOT_TIMER_PORT 0x3f0
#define BOOT_TIMER_MAGIC 123
#define SEQ_BLOCK (1 << 20)
#define RAND_BLOCK 4096
#define NET_BUFFER (128 << 10)

static int fail(const char *what) {
  printf("fgbench: error what=\"%s\" errno=\"%s\"\n", what, strerror(errno));
  fflush(stdout);
  return 1;
}

static long number(const char *text, const char *what) {
  char *end;
  long n = strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || n <= 0) {
    printf("fgbench: error what=\"%s is not a positive number: %s\"\n", what, text);
    exit(2);
  }
  return n;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int mark(void) {
  // Only where the port may be written (ring 0 granted it): QEMU has nothing there and drops it.
  if (ioperm(BOOT_TIMER_PORT, 1, 1) == 0) outb(BOOT_TIMER_MAGIC, BOOT_TIMER_PORT);
  printf("fgbench: init\n");
  fflush(stdout);
  return 0;
}

/* xorshift64: the same offsets under every monitor. */
static uint64_t next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

enum pattern { SEQUENTIAL, RANDOM };

/* One request at a time for `seconds`: the result is bytes moved and requests done. */
static int run_io(int fd, uint64_t size, enum pattern p, int write_it, double seconds,
                  unsigned char *buf, const char *name) {
  size_t block = p == SEQUENTIAL ? SEQ_BLOCK : RAND_BLOCK;
  uint64_t blocks = size / block, ops = 0, seed = 0x9e3779b97f4a7c15ull, i = 0;
  if (blocks == 0) {
    errno = EINVAL;
    return fail("device smaller than one block");
  }
  double start = now(), elapsed = 0;
  do {
    uint64_t at = (p == SEQUENTIAL ? i++ % blocks : next(&seed) % blocks) * block;
    ssize_t n = write_it ? pwrite(fd, buf, block, (off_t)at) : pread(fd, buf, block, (off_t)at);
    if (n != (ssize_t)block) return fail(write_it ? "pwrite" : "pread");
    ops++;
    if ((ops & 7) == 0 || p == SEQUENTIAL) elapsed = now() - start;
  } while (elapsed < seconds);
  elapsed = now() - start;
  printf("fgbench: blk test=%s ops=%llu seconds=%.3f MBps=%.2f iops=%.0f\n", name,
         (unsigned long long)ops, elapsed, (double)ops * (double)block / 1e6 / elapsed,
         (double)ops / elapsed);
  fflush(stdout);
  return 0;
}

static int blk(const char *dev, double seconds) {
  int fd = open(dev, O_RDWR | O_DIRECT);
  if (fd < 0) return fail("open");
  uint64_t size = 0;
  struct stat st;
  if (fstat(fd, &st) < 0) return fail("fstat");
  // A plain file works too (to try the program out on a host).
  if (S_ISBLK(st.st_mode) ? ioctl(fd, BLKGETSIZE64, &size) < 0 : (size = (uint64_t)st.st_size, 0))
    return fail("BLKGETSIZE64");
  unsigned char *buf;
  if (posix_memalign((void **)&buf, 4096, SEQ_BLOCK) != 0) return fail("posix_memalign");
  for (size_t i = 0; i < SEQ_BLOCK; i++) buf[i] = (unsigned char)(i * 131 + 7);
  // Writes first, so that the reads find the blocks allocated in the file behind the disk.
  // A warm-up before, reported apart: what runs first otherwise also pays for a monitor's
  // first requests (code not yet compiled, buffers not yet made).
  if (run_io(fd, size, SEQUENTIAL, 1, seconds < 2 ? seconds : 2, buf, "warm-up") ||
      run_io(fd, size, SEQUENTIAL, 1, seconds, buf, "seq-write") ||
      run_io(fd, size, SEQUENTIAL, 0, seconds, buf, "seq-read") ||
      run_io(fd, size, RANDOM, 1, seconds, buf, "rand-write") ||
      run_io(fd, size, RANDOM, 0, seconds, buf, "rand-read"))
    return 1;
  if (fsync(fd) < 0) return fail("fsync");
  close(fd);
  return 0;
}

static int net_recv(unsigned port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("bind");
  if (listen(s, 1) < 0) return fail("listen");
  printf("fgbench: listening port=%u\n", port);
  fflush(stdout);
  int c = accept(s, NULL, NULL);
  if (c < 0) return fail("accept");
  static unsigned char buf[NET_BUFFER];
  uint64_t total = 0;
  double start = 0;
  for (;;) {
    ssize_t n = read(c, buf, sizeof buf);
    if (n < 0) return fail("read");
    if (n == 0) break;
    if (total == 0) start = now();
    total += (uint64_t)n;
  }
  double elapsed = now() - start;
  printf("fgbench: net-recv bytes=%llu seconds=%.3f Mbps=%.1f\n", (unsigned long long)total,
         elapsed, (double)total * 8 / 1e6 / elapsed);
  fflush(stdout);
  close(c);
  close(s);
  return 0;
}

static int net_send(const char *host, unsigned port, double seconds) {
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
    errno = EINVAL;
    return fail("host is not an IPv4 address");
  }
  int s = -1;
  for (double give_up = now() + 60;;) {
    s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) return fail("socket");
    if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) break;
    close(s);
    if (now() > give_up) return fail("connect");
    usleep(200000);
  }
  static unsigned char buf[NET_BUFFER];
  memset(buf, 0x5a, sizeof buf);
  uint64_t total = 0;
  double start = now(), elapsed = 0;
  do {
    ssize_t n = write(s, buf, sizeof buf);
    if (n < 0) return fail("write");
    total += (uint64_t)n;
    elapsed = now() - start;
  } while (elapsed < seconds);
  close(s);
  printf("fgbench: net-send bytes=%llu seconds=%.3f Mbps=%.1f\n", (unsigned long long)total,
         elapsed, (double)total * 8 / 1e6 / elapsed);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv) {
  const char *cmd = argc > 1 ? argv[1] : "";
  if (!strcmp(cmd, "mark") && argc == 2) return mark();
  if (!strcmp(cmd, "blk") && argc == 4) return blk(argv[2], (double)number(argv[3], "SECONDS"));
  if (!strcmp(cmd, "net-recv") && argc == 3)
    return net_recv((unsigned)number(argv[2], "PORT"));
  if (!strcmp(cmd, "net-send") && argc == 5)
    return net_send(argv[2], (unsigned)number(argv[3], "PORT"),
                    (double)number(argv[4], "SECONDS"));
  fprintf(stderr,
          "usage: guestbench mark | blk DEV SECONDS | net-recv PORT | net-send HOST PORT SECS\n");
  return 2;
}
