/* nbdkit-written-filter: counts, per export, the bytes that clients made durable.
 *
 *   nbdkit --filter=.../nbdkit-written-filter.so file dir=EXPORTS written-dir=COUNTS
 *
 * Why: the OMA commits a disk's change ID only when its export server saw at least the
 * bytes the VMA says it copied (issue 13, finding 3): a VMA that reports a disk
 * "completed" without writing it is caught, because only the server's own count is
 * trusted.
 *
 * What counts: the bytes of write and write-zeroes requests that succeeded and were
 * then made durable on the same connection: by a later successful flush (which covers
 * the requests completed before it started), or at once when sent with FUA. Bytes never
 * flushed (a crash, a lost connection, a failed flush) are not counted: the copy engine
 * writes such ranges again, and then they are counted. Trims and reads are not counted.
 * A flush counts its own connection's bytes only: a client that relies on multi-conn to
 * make one connection's flush cover another's writes is under-counted (the copy engine
 * flushes every connection it wrote on).
 * A range written twice counts twice (the count is of bytes received, not of distinct
 * bytes), so the count may exceed what the client reports, never fall short of it for
 * an honest client.
 *
 * Where: COUNTS/<export>.written holds the export's total as decimal text and a newline.
 * Each addition holds flock(2) on COUNTS/<export>.lock (separate opens, so it excludes
 * other threads as well as other nbdkit processes), reads the total, writes the new one
 * to a temporary file, fsyncs it and renames it into place: a reader sees the old total
 * or the new one, and totals survive nbdkit and OMA restarts. The count is added before
 * the flush's reply is sent: a client that saw the reply finds its bytes counted.
 *
 * Export names are the OMA's own (migration-vm-UUID-diskN); a name with anything but
 * letters, digits, '.', '_' and '-', or starting with '.', is refused at open, so no
 * name reaches a path outside COUNTS. Memory: one fixed-size handle per connection.
 * Errors go through nbdkit_error; a count that cannot be written fails the flush (EIO),
 * so the client retries instead of believing bytes were counted.
 *
 * Bound to a lease (lease-file=PATH, optional; an OMA node of several, issue 18): the
 * file holds a deadline, decimal nanoseconds on CLOCK_BOOTTIME (this machine's clock
 * since boot, suspended time included), that the OMA moves forward each time it renews
 * its node's lease in the database, to a moment before any other node may take its VMs
 * over. Once the deadline has passed, write, write-zeroes and trim fail (EROFS) until
 * the file holds a later one: an OMA that is frozen (SIGSTOP, a VM paused), cut off from
 * the database or dead cannot keep this server writing volumes another node may own by
 * now. The server enforces it itself, so nothing the stopped OMA would have to do is
 * needed. A file that is missing or unreadable counts as a passed deadline (fail closed).
 * The last deadline read is kept, and the file read again only after it passed: one
 * small read per renewal interval, not per request. Reads and flushes are not refused.
 *
 * Thread model: fully parallel (the handle's pending count has its own mutex; the
 * cached deadline its own).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#define MAX_EXPORT_NAME 200

static char *written_dir; /* the written-dir= parameter, owned */
static char *lease_file;  /* the lease-file= parameter, owned; NULL: writes are not bound to a lease */

static pthread_mutex_t lease_lock = PTHREAD_MUTEX_INITIALIZER; /* guards the two below */
static int64_t lease_deadline;                                   /* CLOCK_BOOTTIME ns; 0: none read yet */
static bool lease_refusing;                                      /* logged once per lapse */

struct handle {
  char export_name[MAX_EXPORT_NAME + 1];
  pthread_mutex_t lock;  /* guards pending */
  uint64_t pending;      /* bytes written on this connection since its last flush started */
};

static void written_unload(void) {
  free(written_dir);
  free(lease_file);
}

static int written_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value) {
  if (strcmp(key, "written-dir") == 0) {
    free(written_dir);
    written_dir = strdup(value);
    if (written_dir == NULL) {
      nbdkit_error("written-dir: %m");
      return -1;
    }
    return 0;
  }
  if (strcmp(key, "lease-file") == 0) {
    if (value[0] != '/') {
      nbdkit_error("written filter: lease-file=%s: give an absolute path", value);
      return -1;
    }
    free(lease_file);
    lease_file = strdup(value);
    if (lease_file == NULL) {
      nbdkit_error("lease-file: %m");
      return -1;
    }
    return 0;
  }
  return next(nxdata, key, value);
}

static int written_config_complete(nbdkit_next_config_complete *next, nbdkit_backend *nxdata) {
  struct stat st;
  if (written_dir == NULL || written_dir[0] != '/') {
    nbdkit_error("written filter: give written-dir=ABSOLUTE_DIRECTORY (where the per-export counts live)");
    return -1;
  }
  if (stat(written_dir, &st) != 0 || !S_ISDIR(st.st_mode) || access(written_dir, W_OK | X_OK) != 0) {
    nbdkit_error("written filter: written-dir=%s is not a writable directory: %m", written_dir);
    return -1;
  }
  return next(nxdata);
}

#define written_config_help                                                  \
  "written-dir=<DIR>  (required) where <export>.written counts are kept.\n" \
  "lease-file=<FILE>  writes allowed only until the deadline it holds (CLOCK_BOOTTIME ns)."

static int64_t boottime_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The deadline in lease_file; 0 (passed) when it cannot be read. */
static int64_t read_deadline(void) {
  char buf[32];
  int fd = open(lease_file, O_RDONLY | O_CLOEXEC);
  if (fd == -1) return 0;
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r <= 0) return 0;
  buf[r] = '\0';
  char *end;
  errno = 0;
  long long v = strtoll(buf, &end, 10);
  if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || v < 0) return 0;
  return v;
}

/* Whether the lease allows writes now (always without lease-file=). */
static bool lease_allows_writes(void) {
  if (lease_file == NULL) return true;
  int64_t now = boottime_ns();
  pthread_mutex_lock(&lease_lock);
  bool ok = now < lease_deadline;
  if (!ok) {
    lease_deadline = read_deadline();
    ok = now < lease_deadline;
    if (!ok && !lease_refusing)
      nbdkit_error("written filter: the OMA node's lease deadline in %s has passed (%.3f s ago): refusing writes "
                   "until it renews its lease (another node may own these volumes by now)",
                   lease_file, (double)(now - lease_deadline) / 1e9);
    lease_refusing = !ok;
  }
  pthread_mutex_unlock(&lease_lock);
  return ok;
}

static bool valid_export_name(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > MAX_EXPORT_NAME || name[0] == '.') return false;
  for (size_t i = 0; i < n; ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok) return false;
  }
  return true;
}

static void *written_open(nbdkit_next_open *next, nbdkit_context *context, int readonly, const char *exportname,
                          int is_tls) {
  (void)is_tls;
  if (!valid_export_name(exportname)) {
    nbdkit_error("written filter: refusing export name '%.64s': only letters, digits, '.', '_' and '-', not "
                 "starting with '.', at most %d characters",
                 exportname, MAX_EXPORT_NAME);
    return NULL;
  }
  if (next(context, readonly, exportname) == -1) return NULL;
  struct handle *h = calloc(1, sizeof *h);
  if (h == NULL) {
    nbdkit_error("written filter: calloc: %m");
    return NULL;
  }
  strcpy(h->export_name, exportname); /* length checked above */
  pthread_mutex_init(&h->lock, NULL);
  return h;
}

static void written_close(void *handle) {
  struct handle *h = handle;
  pthread_mutex_destroy(&h->lock);
  free(h);
}

/* Reads a count file's total: 0 when it does not exist. */
static int read_total(const char *path, uint64_t *total) {
  char buf[32];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) {
    if (errno == ENOENT) {
      *total = 0;
      return 0;
    }
    nbdkit_error("written filter: cannot open %s: %m", path);
    return -1;
  }
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r < 0) {
    nbdkit_error("written filter: cannot read %s: %m", path);
    return -1;
  }
  buf[r] = '\0';
  char *end;
  errno = 0;
  unsigned long long v = strtoull(buf, &end, 10);
  if (r == 0 || buf[0] < '0' || buf[0] > '9' || errno != 0 || (*end != '\n' && *end != '\0')) {
    nbdkit_error("written filter: %s does not hold a count; move it away (the OMA then cannot verify passes "
                 "in progress on this export)",
                 path);
    return -1;
  }
  *total = v;
  return 0;
}

static int write_total(const char *path, const char *tmp, uint64_t total) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%" PRIu64 "\n", total);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd == -1) {
    nbdkit_error("written filter: cannot create %s: %m", tmp);
    return -1;
  }
  if (write(fd, buf, n) != n || fsync(fd) != 0) {
    nbdkit_error("written filter: cannot write %s: %m", tmp);
    close(fd);
    unlink(tmp);
    return -1;
  }
  close(fd);
  if (rename(tmp, path) != 0) {
    nbdkit_error("written filter: cannot rename %s to %s: %m", tmp, path);
    unlink(tmp);
    return -1;
  }
  return 0;
}

/* Adds `bytes` to the export's count file, under the export's lock file. */
static int add_to_count(const struct handle *h, uint64_t bytes) {
  char lock_path[4096], path[4096], tmp[4096];
  if (bytes == 0) return 0;
  snprintf(lock_path, sizeof lock_path, "%s/%s.lock", written_dir, h->export_name);
  snprintf(path, sizeof path, "%s/%s.written", written_dir, h->export_name);
  snprintf(tmp, sizeof tmp, "%s/%s.written.tmp", written_dir, h->export_name);
  int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock == -1) {
    nbdkit_error("written filter: cannot open %s: %m", lock_path);
    return -1;
  }
  int r;
  while ((r = flock(lock, LOCK_EX)) == -1 && errno == EINTR) {}
  if (r == -1) {
    nbdkit_error("written filter: cannot lock %s: %m", lock_path);
    close(lock);
    return -1;
  }
  uint64_t total = 0;
  r = read_total(path, &total);
  if (r == 0) {
    total = total > UINT64_MAX - bytes ? UINT64_MAX : total + bytes;
    r = write_total(path, tmp, total);
  }
  close(lock); /* releases the flock */
  return r;
}

static void add_pending(struct handle *h, uint64_t bytes) {
  pthread_mutex_lock(&h->lock);
  h->pending += bytes;
  pthread_mutex_unlock(&h->lock);
}

/* A request that succeeded: durable now (FUA) or at the connection's next flush. */
static int written(struct handle *h, uint32_t count, uint32_t flags, int *err) {
  if (flags & NBDKIT_FLAG_FUA) {
    if (add_to_count(h, count) == -1) {
      *err = EIO;
      return -1;
    }
    return 0;
  }
  add_pending(h, count);
  return 0;
}

static int written_pwrite(nbdkit_next *next, void *handle, const void *buf, uint32_t count, uint64_t offset,
                          uint32_t flags, int *err) {
  if (!lease_allows_writes()) {
    *err = EROFS;
    return -1;
  }
  if (next->pwrite(next, buf, count, offset, flags, err) == -1) return -1;
  return written(handle, count, flags, err);
}

static int written_zero(nbdkit_next *next, void *handle, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
  if (!lease_allows_writes()) {
    *err = EROFS;
    return -1;
  }
  if (next->zero(next, count, offset, flags, err) == -1) return -1;
  return written(handle, count, flags, err);
}

static int written_trim(nbdkit_next *next, void *handle, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
  (void)handle;
  if (!lease_allows_writes()) {
    *err = EROFS;
    return -1;
  }
  return next->trim(next, count, offset, flags, err);
}

static int written_flush(nbdkit_next *next, void *handle, uint32_t flags, int *err) {
  struct handle *h = handle;
  /* The flush covers the requests completed before it starts; later ones wait for the
   * next flush. A failed flush drops its bytes: the client writes them again. */
  pthread_mutex_lock(&h->lock);
  uint64_t covered = h->pending;
  h->pending = 0;
  pthread_mutex_unlock(&h->lock);
  if (next->flush(next, flags, err) == -1) return -1;
  if (add_to_count(h, covered) == -1) {
    *err = EIO;
    return -1;
  }
  return 0;
}

static struct nbdkit_filter filter = {
    .name = "written",
    .longname = "MigrateKit written-bytes filter",
    .description = "counts the bytes each export's clients made durable (write/zero then flush or FUA)",
    .unload = written_unload,
    .config = written_config,
    .config_complete = written_config_complete,
    .config_help = written_config_help,
    .open = written_open,
    .close = written_close,
    .pwrite = written_pwrite,
    .zero = written_zero,
    .trim = written_trim,
    .flush = written_flush,
};

NBDKIT_REGISTER_FILTER(filter)
