// How many CPUs this process can keep busy: the CPUs in its affinity mask, capped by the CPU quota
// of the cgroup mounted at /sys/fs/cgroup (in a container, its own: a Kubernetes CPU limit lands
// there). The affinity mask alone would report every CPU of the node.
#pragma once

#include <string>
#include <string_view>

namespace nbu {

// At least 1. `cgroup_root`: where the process's cgroup is mounted (tests point it elsewhere).
unsigned UsableCpus(const std::string& cgroup_root = "/sys/fs/cgroup");

// The CPUs a cgroup quota allows, rounded up; 0 when there is no quota or the text is not one.
// cgroup v2: the text of cpu.max ("200000 100000" -> 2, "150000 100000" -> 2, "max 100000" -> 0).
unsigned CpusFromCgroupV2Max(std::string_view text);
// cgroup v1: cpu.cfs_quota_us and cpu.cfs_period_us (a quota of -1 means none).
unsigned CpusFromCgroupV1(std::string_view quota_us, std::string_view period_us);

}  // namespace nbu
