/*
 * tty-hangup DEVICE: hangs up a terminal, as a serial line does when its modem drops the
 * carrier or a console server drops the session: every descriptor open on it then reads
 * end-of-file and fails to write, until the terminal is opened again. The cluster tests
 * do this to a console's terminal (TIOCVHANGUP needs CAP_SYS_TTY_CONFIG: root).
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <errno.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: tty-hangup DEVICE\n");
    return 2;
  }
  int fd = open(argv[1], O_RDWR | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    fprintf(stderr, "tty-hangup: %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  if (ioctl(fd, TIOCVHANGUP, 0) < 0) {
    fprintf(stderr, "tty-hangup: TIOCVHANGUP on %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  return 0;
}
