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

}  // namespace nbu::test
