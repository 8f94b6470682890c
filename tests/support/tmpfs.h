// A tmpfs mounted for one test: staging that runs out of room, or is too small from the start.
#pragma once

#include <string>

namespace nbu::test {

// Mounts a tmpfs of `size` (mount(8)'s size= syntax, e.g. "256k") at `dir`, creating the
// directory, and unmounts it (lazily) when it goes. Mounting needs CAP_SYS_ADMIN: a test checks
// ok() and skips without it, naming error().
class ScopedTmpfs {
 public:
  ScopedTmpfs(std::string dir, const std::string& size);
  ~ScopedTmpfs();
  ScopedTmpfs(const ScopedTmpfs&) = delete;
  ScopedTmpfs& operator=(const ScopedTmpfs&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  // Remounts it at another size, keeping its files; false (and error()) on failure.
  bool Resize(const std::string& size);
  // Remounts it read-only, or writable again, keeping its files and size.
  bool SetReadOnly(bool read_only);

 private:
  std::string dir_;
  std::string error_;
};

// `dir` bind-mounted at `at` (made if missing) for the scope, as a volume is mounted under a
// running process; Unmount takes it away (lazily, as umount -l does: what is open stays usable)
// and Mount puts the same files back. Needs the right to mount (root), as ScopedTmpfs does.
class ScopedBindMount {
 public:
  ScopedBindMount(std::string dir, std::string at);
  ~ScopedBindMount();
  ScopedBindMount(const ScopedBindMount&) = delete;
  ScopedBindMount& operator=(const ScopedBindMount&) = delete;

  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }
  bool Unmount();  // false (and error()) on failure
  bool Mount();

 private:
  std::string dir_;
  std::string at_;
  bool mounted_ = false;
  std::string error_;
};

}  // namespace nbu::test
