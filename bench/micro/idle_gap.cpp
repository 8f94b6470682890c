// What an idle gap before a piece of work does to that work's CPU time. The service's workers
// block on each request; against a slow server a worker wakes after tens of milliseconds. Here
// one thread does a fixed piece of work after sleeping 0, 2 or 25 ms, and only the work is
// timed (CLOCK_THREAD_CPUTIME_ID). Two kinds of work:
//   file: what the file system sees of a small file: rename it in, open, read 64 KiB, close,
//         rename it on (page-cached, in a temporary directory);
//   md5:  an MD5 of 64 KiB already in memory (compute only).
// On a virtual machine whose CPU idles during the gap, the first kind can cost several times
// more after a long gap (bench/RESULTS.md, thirteenth stop). Prints one line per kind and gap.
#include "util/crypto.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace {

double ThreadCpuUs() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

constexpr size_t kFileBytes = 64 << 10;

// The median CPU time of `iters` runs of `work(i)`, each after sleeping `gap`.
template <typename Work>
double MedianUs(int iters, std::chrono::microseconds gap, Work work) {
  std::vector<double> us;
  us.reserve(static_cast<size_t>(iters));
  for (int i = 0; i < iters; ++i) {
    if (gap.count() > 0) std::this_thread::sleep_for(gap);
    const double t0 = ThreadCpuUs();
    work(i);
    us.push_back(ThreadCpuUs() - t0);
  }
  std::nth_element(us.begin(), us.begin() + iters / 2, us.end());
  return us[static_cast<size_t>(iters / 2)];
}

}  // namespace

int main() {
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/nbu-idle-gap-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    return 1;
  }
  const fs::path root(tmpl);
  fs::create_directory(root / "in");
  fs::create_directory(root / "out");
  const std::string bytes(kFileBytes, 'x');
  std::vector<char> buf(kFileBytes);
  int round = 0;  // every measurement gets fresh names

  const auto file_work = [&](int i) {
    const std::string name = std::to_string(round) + "-" + std::to_string(i);
    const std::string in = (root / "in" / name).string();
    const std::string claimed = (root / "out" / (name + ".claimed")).string();
    const std::string done = (root / "out" / (name + ".done")).string();
    if (std::rename(in.c_str(), claimed.c_str()) != 0) std::abort();
    const int fd = ::open(claimed.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || ::pread(fd, buf.data(), buf.size(), 0) != static_cast<ssize_t>(buf.size())) {
      std::abort();
    }
    ::close(fd);
    if (std::rename(claimed.c_str(), done.c_str()) != 0) std::abort();
  };
  const auto md5_work = [&](int) { (void)nbu::Md5::Of(bytes); };

  std::printf("%-5s %8s %12s\n", "work", "gap ms", "median us");
  for (const int gap_ms : {0, 2, 25, 0}) {
    const int iters = gap_ms >= 25 ? 200 : 1000;  // bounded: about 5 s for the 25 ms rounds
    ++round;
    for (int i = 0; i < iters; ++i) {  // the files, written before the clock
      const std::string path = (root / "in" / (std::to_string(round) + "-" + std::to_string(i)));
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      if (fd < 0 || ::write(fd, bytes.data(), bytes.size()) != static_cast<ssize_t>(bytes.size())) {
        std::abort();
      }
      ::close(fd);
    }
    const auto gap = std::chrono::milliseconds(gap_ms);
    std::printf("%-5s %8d %12.1f\n", "file", gap_ms, MedianUs(iters, gap, file_work));
    std::printf("%-5s %8d %12.1f\n", "md5", gap_ms, MedianUs(iters, gap, md5_work));
  }
  fs::remove_all(root);
  return 0;
}
