/* A RUN step that tries to write outside its root (crates/rbuild/tests/modes.rs). Every
 * attempt that gets somewhere writes ESCAPED-<tag> at the root it reached; the test looks
 * for that file at the root of the host (or of the container rbuild runs in). Each line
 * says what one attempt got. Built static: the image has no C library of ours. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char marker[256];

static void try_write(const char *what, const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY, 0644);
    if (fd < 0) {
        printf("%s: open %s: %s\n", what, path, strerror(errno));
        return;
    }
    (void)write(fd, "escaped\n", 8);
    close(fd);
    printf("%s: wrote %s\n", what, path);
}

/* The classic way out of a chroot jail: chroot into a subdirectory while the working
 * directory stays outside it, climb, chroot to where the climb ended. In a child, so the
 * other attempts start from the step's own root. */
static void chroot_escape(void) {
    pid_t pid = fork();
    if (pid == 0) {
        mkdir("/.escape-jail", 0755);
        if (chroot("/.escape-jail") != 0) {
            printf("chroot: %s\n", strerror(errno));
            fflush(stdout);
            _exit(0);
        }
        for (int i = 0; i < 64; i++) (void)chdir("..");
        if (chroot(".") != 0) {
            printf("chroot back: %s\n", strerror(errno));
            fflush(stdout);
            _exit(0);
        }
        try_write("chroot", marker);
        fflush(stdout);
        _exit(0);
    }
    if (pid > 0) waitpid(pid, NULL, 0);
}

static void ptrace_parent(void) {
    pid_t parent = getppid();
    if (ptrace(PTRACE_ATTACH, parent, 0, 0) == 0) {
        printf("ptrace parent %d: ATTACHED\n", (int)parent);
        waitpid(parent, NULL, __WALL);
        ptrace(PTRACE_DETACH, parent, 0, 0);
    } else {
        printf("ptrace parent %d: %s\n", (int)parent, strerror(errno));
    }
}

/* Through another process's root: /proc/PID/root of every process this step can see. */
static void proc_roots(void) {
    DIR *d = opendir("/proc");
    if (!d) {
        printf("proc: %s\n", strerror(errno));
        return;
    }
    struct dirent *e;
    int self = getpid();
    while ((e = readdir(d))) {
        int pid = atoi(e->d_name);
        if (pid <= 0 || pid == self) continue;
        char path[512];
        snprintf(path, sizeof path, "/proc/%d/root%s", pid, marker);
        char what[64];
        snprintf(what, sizeof what, "proc root %d", pid);
        try_write(what, path);
    }
    closedir(d);
}

int main(int argc, char **argv) {
    snprintf(marker, sizeof marker, "/ESCAPED-%s", argc > 1 ? argv[1] : "x");
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("uid %d, pid %d, parent %d\n", (int)getuid(), (int)getpid(), (int)getppid());
    chroot_escape();
    ptrace_parent();
    proc_roots();
    if (mount("none", "/tmp", "tmpfs", 0, NULL) == 0) printf("mount: MOUNTED\n");
    else printf("mount: %s\n", strerror(errno));
    /* Back up from the root by name: stays at the root. */
    char up[300];
    snprintf(up, sizeof up, "/../../..%s", marker);
    try_write("dotdot", up);
    printf("probe done\n");
    return 0;
}
