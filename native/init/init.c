// flatgrid-init: PID 1 of a flatgrid node.
//
// It mounts the kernel filesystems, starts the node supervisor (src/os) as its
// only child, reaps every zombie, restarts the supervisor when it dies and
// performs poweroff/reboot. Everything else (services, modules, network) is the
// supervisor's job, so that this file stays small enough to trust.
//
// Usage: init [--stop-timeout SECONDS] [--kill-timeout SECONDS] [-- COMMAND ARGS...]
//
// Three modes, chosen at start:
//   os         PID 1 of the initial PID namespace: the real machine.
//   namespace  PID 1 of another PID namespace (tests: unshare --pid --fork --mount).
//              reboot() there ends the namespace instead of the machine.
//   process    not PID 1 (development): no mounts, no reboot, acts as subreaper.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROC_PID_INIT_INO 0xEFFFFFFCU
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 10000
#define STABLE_RUN_MS 30000

enum mode { MODE_OS, MODE_NAMESPACE, MODE_PROCESS };
static const char *const mode_names[] = {"os", "namespace", "process"};

static enum mode mode;
static int sigfd = -1;
static char **sup_argv;
static pid_t sup_pid;           // 0 while no supervisor is running
static pid_t sup_pgid;          // process group of the last supervisor (it calls setsid)
static long long sup_started_ms;
static long long restart_at_ms = -1;
static long long backoff_ms = BACKOFF_MIN_MS;
static bool shutting_down;
static long long stop_timeout_ms = 30000, kill_timeout_ms = 5000;

static struct mount_point {
  const char *source, *target, *fstype;
  unsigned long flags;
  const char *data;
  bool mounted;
} mounts[] = {
    {"proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
    {"sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
    {"devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755", false},
    {"devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
     "newinstance,ptmxmode=0666,mode=0620,gid=5", false},
    {"tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
    {"tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755", false},
    {"tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777", false},
    {"cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL, false},
};
#define N_MOUNTS (sizeof(mounts) / sizeof(mounts[0]))

// One write() per line, so that lines from init and the supervisor never interleave.
__attribute__((format(printf, 1, 2))) static void logmsg(const char *fmt, ...) {
  char line[1024];
  int n = snprintf(line, sizeof(line), "flatgrid-init: ");
  va_list ap;
  va_start(ap, fmt);
  n += vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
  va_end(ap);
  if (n > (int)sizeof(line) - 2) n = sizeof(line) - 2;
  line[n++] = '\n';
  ssize_t unused = write(STDERR_FILENO, line, n);
  (void)unused;
}

static const char *signame(int sig) {
  const char *abbrev = sigabbrev_np(sig);
  static char buf[16];
  snprintf(buf, sizeof(buf), "SIG%s", abbrev ? abbrev : "?");
  return buf;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static long long parse_seconds(const char *opt, const char *value, long long fallback) {
  char *end = NULL;
  double s = value ? strtod(value, &end) : -1;
  if (!value || end == value || *end != '\0' || s < 0 || s > 86400) {
    logmsg("ignoring %s %s: expected seconds", opt, value ? value : "(missing)");
    return fallback;
  }
  return (long long)(s * 1000);
}

static void mount_one(struct mount_point *m) {
  // The mount point may be missing in a fresh initramfs; EEXIST is the usual case.
  if (mkdir(m->target, 0755) < 0 && errno != EEXIST)
    logmsg("cannot create %s: %s", m->target, strerror(errno));
  if (mount(m->source, m->target, m->fstype, m->flags, m->data) < 0) {
    // EBUSY: the very same superblock is already on top there (sysfs of our network
    // namespace, the one devtmpfs). It is usable as is, and not ours to unmount.
    logmsg("cannot mount %s on %s: %s%s", m->fstype, m->target, strerror(errno),
           errno == EBUSY ? " (already mounted there; keeping it)" : "");
    return;
  }
  m->mounted = true;
}

static void unmount_all(void) {
  for (size_t i = N_MOUNTS; i-- > 0;) {
    if (mounts[i].mounted && umount2(mounts[i].target, MNT_DETACH) < 0)
      logmsg("cannot unmount %s: %s", mounts[i].target, strerror(errno));
  }
}

static void setup_console(void) {
  int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) {
    logmsg("cannot open /dev/console: %s", strerror(errno));
    return;
  }
  for (int i = 0; i < 3; i++)
    if (fd != i) dup2(fd, i);
  if (fd > 2) close(fd);
  setsid();
  if (ioctl(STDIN_FILENO, TIOCSCTTY, 1) < 0)
    logmsg("cannot make /dev/console the controlling tty: %s", strerror(errno));
}

// Mounts /proc (needed to tell os from namespace) and returns the mode.
static enum mode detect_mode(void) {
  if (getpid() != 1) return MODE_PROCESS;
  // Private first: in a test namespace nothing we mount may propagate to the host.
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
    logmsg("cannot make / private: %s", strerror(errno));
  mount_one(&mounts[0]);
  if (!mounts[0].mounted) {
    // Without /proc neither we nor the supervisor can work. On the machine this exit
    // panics the kernel, which shows why on the console (and reboots with panic=N).
    logmsg("/proc is required; giving up");
    exit(1);
  }
  struct stat st;
  if (stat("/proc/self/ns/pid", &st) < 0) {
    logmsg("cannot stat /proc/self/ns/pid (%s); assuming the initial namespace",
           strerror(errno));
    return MODE_OS;
  }
  return st.st_ino == PROC_PID_INIT_INO ? MODE_OS : MODE_NAMESPACE;
}

static void start_supervisor(void) {
  static char term[256];
  const char *t = getenv("TERM");
  snprintf(term, sizeof(term), "TERM=%s", t && *t ? t : "linux");
  static char boot[32];
  snprintf(boot, sizeof(boot), "FLATGRID_BOOT=%s", mode_names[mode]);
  char *env[] = {
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "HOME=/root", term, "LANG=C.UTF-8", "FLATGRID_INIT=1", boot, NULL,
  };

  pid_t pid = fork();
  if (pid < 0) {
    logmsg("cannot fork the supervisor: %s", strerror(errno));
    restart_at_ms = now_ms() + backoff_ms;
    return;
  }
  if (pid == 0) {
    setsid();
    // Dispositions ignored by whoever started init would survive exec: reset them all.
    for (int sig = 1; sig < NSIG; sig++)
      if (sig != SIGKILL && sig != SIGSTOP) signal(sig, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    // execvp searches the PATH of environ, so the clean environment decides.
    environ = env;
    execvp(sup_argv[0], sup_argv);
    logmsg("cannot execute %s: %s", sup_argv[0], strerror(errno));
    _exit(127);
  }
  sup_pid = sup_pgid = pid;
  sup_started_ms = now_ms();
  logmsg("started supervisor (pid %d): %s", pid, sup_argv[0]);
}

static void supervisor_ended(int status) {
  if (WIFSIGNALED(status))
    logmsg("supervisor (pid %d) killed by signal %d (%s)", sup_pid, WTERMSIG(status),
           signame(WTERMSIG(status)));
  else
    logmsg("supervisor (pid %d) exited with status %d", sup_pid, WEXITSTATUS(status));
  sup_pid = 0;
  if (shutting_down) return;
  // A supervisor that ran for a while crashed for a new reason: restart it quickly.
  if (now_ms() - sup_started_ms >= STABLE_RUN_MS) backoff_ms = BACKOFF_MIN_MS;
  logmsg("restarting supervisor in %lld ms", backoff_ms);
  restart_at_ms = now_ms() + backoff_ms;
  backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
}

// Reaps every zombie; returns whether any child is left.
static bool reap_children(void) {
  for (;;) {
    int status;
    pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid == 0) return true;
    if (pid < 0) {
      if (errno == EINTR) continue;
      return false;  // ECHILD
    }
    if (pid == sup_pid) supervisor_ended(status);
  }
}

// Signals every process we may have to stop. Only PID 1 may use kill(-1): in process
// mode that would hit every process of the user, on a development machine the whole host.
static void signal_rest(int sig) {
  if (mode != MODE_PROCESS) {
    kill(-1, sig);
    return;
  }
  if (sup_pgid > 0) kill(-sup_pgid, sig);
  // Orphans that left the supervisor's session are our children (we are the subreaper).
  DIR *dir = opendir("/proc");
  if (!dir) return;
  pid_t self = getpid();
  struct dirent *de;
  while ((de = readdir(dir))) {
    char path[64], buf[512];
    int pid = atoi(de->d_name);
    if (pid <= 0) continue;
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) continue;
    buf[n] = '\0';
    // "pid (comm) state ppid ...": comm may contain anything, so parse after the last ')'.
    char *p = strrchr(buf, ')');
    char state;
    int ppid;
    if (p && sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == self)
      kill(pid, sig);
  }
  closedir(dir);
}

static void handle_signal(const struct signalfd_siginfo *si);

// Reads pending signals; returns after the first batch or when timeout_ms passes.
static void wait_signals(long long timeout_ms) {
  struct pollfd pfd = {.fd = sigfd, .events = POLLIN};
  if (timeout_ms > INT_MAX) timeout_ms = INT_MAX;
  poll(&pfd, 1, (int)timeout_ms);
  struct signalfd_siginfo si;
  while (read(sigfd, &si, sizeof(si)) == sizeof(si)) handle_signal(&si);
}

enum until { SUPERVISOR_GONE, ALL_GONE };

// Waits, reaping all the while, until the condition holds; false on timeout.
static bool wait_until(enum until cond, long long timeout_ms) {
  long long deadline = now_ms() + timeout_ms;
  for (;;) {
    bool children_left = reap_children();
    if (cond == SUPERVISOR_GONE ? sup_pid == 0 : !children_left) return true;
    long long left = deadline - now_ms();
    if (left <= 0) return false;
    wait_signals(left);
  }
}

__attribute__((noreturn)) static void shutdown_system(int action) {
  const char *what = action == RB_POWER_OFF ? "power off" : "reboot";
  shutting_down = true;
  restart_at_ms = -1;
  logmsg("shutting down to %s", what);
  if (sup_pid > 0) {
    logmsg("stopping supervisor (pid %d), up to %lld ms", sup_pid, stop_timeout_ms);
    kill(sup_pid, SIGTERM);
    if (!wait_until(SUPERVISOR_GONE, stop_timeout_ms))
      logmsg("supervisor (pid %d) did not stop in time", sup_pid);
  }
  logmsg("sending SIGTERM to remaining processes");
  signal_rest(SIGTERM);
  if (!wait_until(ALL_GONE, kill_timeout_ms)) {
    logmsg("sending SIGKILL to remaining processes");
    // Repeated: in process mode each kill can reparent grandchildren to us.
    for (int i = 0; i < 20; i++) {
      signal_rest(SIGKILL);
      if (wait_until(ALL_GONE, 100)) break;
    }
  }
  if (mode == MODE_PROCESS) {
    logmsg("stopped (not PID 1, so no %s); exiting", what);
    exit(0);
  }
  sync();
  unmount_all();
  logmsg("%s now", what);
  // In a non-initial PID namespace this does not return: the kernel ends the namespace
  // and our parent sees us killed by SIGINT (power off) or SIGHUP (reboot).
  reboot(action);
  logmsg("reboot(%s) failed: %s", what, strerror(errno));
  if (mode == MODE_NAMESPACE) exit(0);
  // PID 1 of the machine must never exit: the kernel would panic.
  for (;;) pause();
}

static void handle_signal(const struct signalfd_siginfo *si) {
  int sig = (int)si->ssi_signo;
  if (sig == SIGCHLD) return;  // reaping happens in the loops, after every wakeup
  if (shutting_down) {
    logmsg("received %s from pid %u during shutdown: ignored", signame(sig), si->ssi_pid);
    return;
  }
  // Senders outside our PID namespace show up as pid 0.
  logmsg("received %s from pid %u", signame(sig), si->ssi_pid);
  if (sig == SIGTERM || sig == SIGUSR1) shutdown_system(RB_POWER_OFF);
  if (sig == SIGINT) shutdown_system(RB_AUTOBOOT);
  if (sig == SIGHUP) logmsg("SIGHUP ignored");
}

int main(int argc, char **argv) {
  // Block before anything can fork, so that no signal is lost or handled asynchronously.
  sigset_t set;
  sigemptyset(&set);
  int handled[] = {SIGCHLD, SIGTERM, SIGUSR1, SIGINT, SIGHUP};
  for (size_t i = 0; i < sizeof(handled) / sizeof(handled[0]); i++) sigaddset(&set, handled[i]);
  sigprocmask(SIG_BLOCK, &set, NULL);
  sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);

  mode = detect_mode();
  if (mode == MODE_PROCESS) {
    logmsg("mode process: not PID 1: no mounts, no reboot; acting as subreaper");
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
      logmsg("cannot become subreaper: %s", strerror(errno));
  } else {
    if (mode == MODE_OS)
      logmsg("mode os: PID 1 of the machine: mounting, console, reboot on shutdown");
    else
      logmsg("mode namespace: PID 1 of a PID namespace: mounting; shutdown ends the namespace");
    for (size_t i = 1; i < N_MOUNTS; i++) {
      // A namespace shares the host's files: a fresh /tmp would hide a supervisor (or a
      // checkout) that lives under the host's /tmp.
      if (mode == MODE_NAMESPACE && strcmp(mounts[i].target, "/tmp") == 0) continue;
      mount_one(&mounts[i]);
      // The console device exists only once /dev is mounted; set it up before more logs.
      if (mode == MODE_OS && strcmp(mounts[i].target, "/dev") == 0) setup_console();
    }
    if (mode == MODE_OS && reboot(RB_DISABLE_CAD) < 0)
      logmsg("cannot disable ctrl-alt-del: %s", strerror(errno));
  }
  if (sigfd < 0) {
    logmsg("signalfd failed: %s", strerror(errno));
    if (mode != MODE_OS) return 1;
  }

  static char *default_cmd[] = {"/usr/bin/node", "/usr/lib/flatgrid/dist/src/os/main.js", NULL};
  sup_argv = default_cmd;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--") == 0) {
      if (i + 1 < argc) sup_argv = &argv[i + 1];
      break;
    }
    long long *timeout = strcmp(argv[i], "--stop-timeout") == 0   ? &stop_timeout_ms
                         : strcmp(argv[i], "--kill-timeout") == 0 ? &kill_timeout_ms
                                                                  : NULL;
    if (timeout) {
      const char *opt = argv[i];
      const char *value = i + 1 < argc && strcmp(argv[i + 1], "--") != 0 ? argv[++i] : NULL;
      *timeout = parse_seconds(opt, value, *timeout);
    } else {
      // The kernel hands init the cmdline words it does not understand: never fatal.
      logmsg("ignoring unknown argument %s", argv[i]);
    }
  }

  start_supervisor();
  for (;;) {
    reap_children();
    long long timeout = -1;
    if (restart_at_ms >= 0) {
      timeout = restart_at_ms - now_ms();
      if (timeout <= 0) {
        restart_at_ms = -1;
        start_supervisor();
        continue;
      }
    }
    wait_signals(timeout);
  }
}
