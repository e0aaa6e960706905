/* A slow disk for tests: LD_PRELOAD this into the daemon and every
 * fdatasync/fsync/msync(MS_SYNC) takes PMXCFS_TEST_SYNC_DELAY_MS longer
 * (the data still reaches the disk). With PMXCFS_TEST_SYNC_LOG, a line
 * per fdatasync/fsync is appended to that file: the CLOCK_MONOTONIC time
 * (ns) at which it returned, and the inode and size of the file when it
 * was called (what it made durable). Built by tests/common/mod.rs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void delay(void) {
    const char *ms = getenv("PMXCFS_TEST_SYNC_DELAY_MS");
    if (ms) {
        long v = atol(ms);
        struct timespec t = {v / 1000, (v % 1000) * 1000000L};
        nanosleep(&t, NULL);
    }
}

static void log_sync(const struct stat *before) {
    const char *path = getenv("PMXCFS_TEST_SYNC_LOG");
    if (!path)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char line[96];
    int n = snprintf(line, sizeof line, "%lld %llu %lld\n",
                     (long long)now.tv_sec * 1000000000LL + now.tv_nsec,
                     (unsigned long long)before->st_ino, (long long)before->st_size);
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) {
        (void)!write(fd, line, (size_t)n);
        close(fd);
    }
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    struct stat before;
    if (fstat(fd, &before) != 0)
        memset(&before, 0, sizeof before);
    delay();
    int r = real(fd);
    log_sync(&before);
    return r;
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    struct stat before;
    if (fstat(fd, &before) != 0)
        memset(&before, 0, sizeof before);
    delay();
    int r = real(fd);
    log_sync(&before);
    return r;
}

int msync(void *addr, size_t length, int flags) {
    static int (*real)(void *, size_t, int);
    if (!real)
        real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "msync");
    if (flags & MS_SYNC)
        delay();
    return real(addr, length, flags);
}
