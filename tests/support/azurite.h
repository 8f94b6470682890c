// Test support: a real Azurite blob emulator on a free loopback port, stopped on destruction.
#pragma once

#include "support/process.h"

#include <memory>
#include <string>
#include <vector>

namespace nbu::test {

inline constexpr const char* kAzuriteAccount = "devstoreaccount1";
inline constexpr const char* kAzuriteKey =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct AzuriteOptions {
  bool in_memory = true;
  int port = 0;                         // 0: pick a free port
  std::vector<std::string> extra_args;  // e.g. --cert/--key/--oauth basic
  std::string scheme = "http";
};

class Azurite {
 public:
  explicit Azurite(AzuriteOptions options = {});
  ~Azurite();
  Azurite(const Azurite&) = delete;
  Azurite& operator=(const Azurite&) = delete;

  int port() const { return port_; }
  // "http://127.0.0.1:<port>/devstoreaccount1"
  std::string BlobEndpoint() const;
  std::string ConnectionString() const;
  // Stops (SIGKILL) and starts again on the same port and workspace.
  void Stop();
  void Start();

 private:
  AzuriteOptions options_;
  TempDir dir_;
  int port_ = 0;
  std::unique_ptr<ChildProcess> proc_;
};

// One Azurite for the whole test binary, started at first use and stopped at exit: starting one
// takes over a second. The tests sharing it write to containers of their own (FreshContainer).
Azurite& SharedAzurite();

// `name` made the name of a container no other test of this binary, nor an earlier round of the
// same test (--gtest_repeat), has written to: "<name>-<n>".
std::string FreshContainer(const std::string& name);

}  // namespace nbu::test
