// The floor under the service's first scan of a backlog: list a directory and stat every entry
// (readdir and fstatat(AT_SYMLINK_NOFOLLOW), as the scanner does), nothing else. Prints the CPU
// time (user + system) of each of ROUNDS passes, in ms, on one line. bench/scale.sh builds it
// with cc and runs it on the same backlog as the service.
// Usage: scan_floor DIR [ROUNDS]
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

static double CpuMs(void) {
  struct rusage r;
  getrusage(RUSAGE_SELF, &r);
  return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1e3 +
         (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e3;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DIR [ROUNDS]\n", argv[0]);
    return 2;
  }
  const int rounds = argc > 2 ? atoi(argv[2]) : 3;
  for (int i = 0; i < rounds; ++i) {
    const double start = CpuMs();
    DIR* d = opendir(argv[1]);
    if (d == NULL) {
      perror(argv[1]);
      return 1;
    }
    long stated = 0;
    struct dirent* e;
    struct stat st;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] == '.') continue;
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) ++stated;
    }
    closedir(d);
    printf("%s%.0f", i == 0 ? "" : " ", CpuMs() - start);
    if (stated == 0) fprintf(stderr, "no entry stat-ed in %s\n", argv[1]);
  }
  printf("\n");
  return 0;
}
