/*
 * Runs one command and prints "WALL_NS MAXRSS_KIB EXIT_CODE" on stdout.
 *
 * Why not measure from Python: Linux keeps the highest RSS a process ever had, and a child's
 * record starts with its parent's memory (exec records the old address space's peak), so every
 * child of a 20 MiB Python process reports at least 20 MiB. Launched from this small static
 * program, the inherited floor is a few hundred KiB (the `true` row of the table shows it), and
 * the wall time excludes the interpreter.
 *
 * Build: cc -O2 -static -o spawn spawn.c
 * Usage: spawn PROGRAM [ARGS...]   (PROGRAM is an absolute path; output of the command discarded)
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: spawn PROGRAM [ARGS...]\n");
        return 2;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid;
    int err = posix_spawn(&pid, argv[1], &fa, NULL, argv + 1, environ);
    if (err != 0) {
        fprintf(stderr, "spawn: cannot run %s (error %d)\n", argv[1], err);
        return 2;
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) {
        perror("spawn: wait4");
        return 2;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long long ns = (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("%lld %ld %d\n", ns, ru.ru_maxrss, code);
    return 0;
}
