#include "support/tmpfs.h"

#include <sys/mount.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

namespace nbu::test {

ScopedTmpfs::ScopedTmpfs(std::string dir, const std::string& size) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", 0, ("size=" + size).c_str()) != 0) {
    error_ = "cannot mount a tmpfs at " + dir_ + ": " + std::strerror(errno);
  }
}

ScopedTmpfs::~ScopedTmpfs() {
  if (ok()) ::umount2(dir_.c_str(), MNT_DETACH);
}

bool ScopedTmpfs::Resize(const std::string& size) {
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", MS_REMOUNT, ("size=" + size).c_str()) == 0) {
    return true;
  }
  error_ = "cannot remount " + dir_ + ": " + std::strerror(errno);
  return false;
}

bool ScopedTmpfs::SetReadOnly(bool read_only) {
  const unsigned long flags = MS_REMOUNT | (read_only ? MS_RDONLY : 0);
  if (::mount("tmpfs", dir_.c_str(), "tmpfs", flags, nullptr) == 0) return true;
  error_ = "cannot remount " + dir_ + ": " + std::strerror(errno);
  return false;
}

ScopedBindMount::ScopedBindMount(std::string dir, std::string at)
    : dir_(std::move(dir)), at_(std::move(at)) {
  std::error_code ec;
  std::filesystem::create_directories(at_, ec);
  Mount();
}

ScopedBindMount::~ScopedBindMount() {
  if (mounted_) ::umount2(at_.c_str(), MNT_DETACH);
}

bool ScopedBindMount::Unmount() {
  if (::umount2(at_.c_str(), MNT_DETACH) != 0) {
    error_ = "cannot unmount " + at_ + ": " + std::strerror(errno);
    return false;
  }
  mounted_ = false;
  return true;
}

bool ScopedBindMount::Mount() {
  if (::mount(dir_.c_str(), at_.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    error_ = "cannot bind-mount " + dir_ + " at " + at_ + ": " + std::strerror(errno);
    return false;
  }
  mounted_ = true;
  return true;
}

}  // namespace nbu::test
