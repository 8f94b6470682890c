#include "util/cpus.h"

#include "util/fs.h"

#include <sched.h>

#include <algorithm>
#include <charconv>
#include <string>
#include <thread>

namespace nbu {
namespace {

// A positive decimal integer, with surrounding blanks; 0 otherwise.
long long ParsePositive(std::string_view s) {
  const auto first = s.find_first_not_of(" \t\n");
  if (first == std::string_view::npos) return 0;
  s.remove_prefix(first);
  s = s.substr(0, s.find_last_not_of(" \t\n") + 1);
  long long v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v <= 0) return 0;
  return v;
}

unsigned CeilDiv(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<unsigned>((quota + period - 1) / period);
}

// A cgroup file's text; empty when it is missing or unreadable (no quota there).
std::string CgroupFile(const std::string& path) {
  auto text = fs::ReadSmallFile(path, 4096);
  return text.ok() ? *text : std::string();
}

}  // namespace

unsigned CpusFromCgroupV2Max(std::string_view text) {
  const auto space = text.find(' ');
  if (space == std::string_view::npos) return 0;
  return CeilDiv(ParsePositive(text.substr(0, space)), ParsePositive(text.substr(space + 1)));
}

unsigned CpusFromCgroupV1(std::string_view quota_us, std::string_view period_us) {
  return CeilDiv(ParsePositive(quota_us), ParsePositive(period_us));
}

unsigned UsableCpus(const std::string& cgroup_root) {
  unsigned cpus = 0;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) cpus = static_cast<unsigned>(CPU_COUNT(&set));
  if (cpus == 0) cpus = std::thread::hardware_concurrency();
  unsigned quota = CpusFromCgroupV2Max(CgroupFile(cgroup_root + "/cpu.max"));
  if (quota == 0) {
    quota = CpusFromCgroupV1(CgroupFile(cgroup_root + "/cpu/cpu.cfs_quota_us"),
                             CgroupFile(cgroup_root + "/cpu/cpu.cfs_period_us"));
  }
  if (quota != 0 && (cpus == 0 || quota < cpus)) cpus = quota;
  return std::max(1U, cpus);
}

}  // namespace nbu
