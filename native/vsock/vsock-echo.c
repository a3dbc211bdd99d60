/*
 * vsock-echo: both ends of a virtio-vsock round trip, for the e2e tests (busybox has no
 * AF_VSOCK). Static, so the same binary runs on a node and in a busybox guest.
 *   vsock-echo listen PORT COUNT       answer COUNT connections on PORT, one after another
 *   vsock-echo send CID PORT MESSAGE   send MESSAGE to CID:PORT, print the answer
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

static int fail(const char *what) {
  fprintf(stderr, "vsock-echo: %s: %s\n", what, strerror(errno));
  return 1;
}

static long number(const char *text, const char *what) {
  char *end;
  long n = strtol(text, &end, 10);
  if (*text == '\0' || *end != '\0' || n < 0) {
    fprintf(stderr, "vsock-echo: %s is not a number: %s\n", what, text);
    exit(2);
  }
  return n;
}

static int listen_on(unsigned port, long count) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
  if (bind(s, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("bind");
  if (listen(s, 4) < 0) return fail("listen");
  printf("vsock-echo: listening on port %u\n", port);
  fflush(stdout);
  for (long i = 0; i < count; i++) {
    struct sockaddr_vm peer;
    socklen_t len = sizeof peer;
    int c = accept(s, (struct sockaddr *)&peer, &len);
    if (c < 0) return fail("accept");
    char buf[256];
    ssize_t n = read(c, buf, sizeof buf - 1);
    if (n < 0) return fail("read");
    buf[n] = '\0';
    printf("vsock-echo: from cid %u port %u: %s\n", peer.svm_cid, peer.svm_port, buf);
    fflush(stdout);
    char answer[320];
    int m = snprintf(answer, sizeof answer, "echo from the host: %s", buf);
    if (write(c, answer, (size_t)m) != m) return fail("write");
    close(c);
  }
  close(s);
  return 0;
}

static int send_to(unsigned cid, unsigned port, const char *message) {
  int s = socket(AF_VSOCK, SOCK_STREAM, 0);
  if (s < 0) return fail("socket");
  struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
  if (connect(s, (struct sockaddr *)&addr, sizeof addr) < 0) return fail("connect");
  size_t len = strlen(message);
  if (write(s, message, len) != (ssize_t)len) return fail("write");
  char buf[512];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(s, buf + got, sizeof buf - 1 - got);
    if (n < 0) return fail("read");
    if (n == 0 || (got += (size_t)n) == sizeof buf - 1) break;
  }
  buf[got] = '\0';
  printf("vsock-echo: reply: %s\n", buf);
  close(s);
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "listen") == 0)
    return listen_on((unsigned)number(argv[2], "PORT"), number(argv[3], "COUNT"));
  if (argc == 5 && strcmp(argv[1], "send") == 0)
    return send_to((unsigned)number(argv[2], "CID"), (unsigned)number(argv[3], "PORT"), argv[4]);
  fprintf(stderr, "usage: vsock-echo listen PORT COUNT | vsock-echo send CID PORT MESSAGE\n");
  return 2;
}
