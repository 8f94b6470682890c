// Test support: a service configuration on a temp directory (header-only: only tests that
// already link the core layer include it).
#pragma once

#include "core/config.h"
#include "support/process.h"

#include <string>

namespace nbu::test {

// The service's four volumes under `dir` (in, proc, failed, staging), its blobs in `container`;
// everything else at its default.
inline core::Config TestConfig(const TempDir& dir, const std::string& container) {
  core::Config config;
  config.incoming_dir = dir.path() + "/in";
  config.processing_root = dir.path() + "/proc";
  config.failed_root = dir.path() + "/failed";
  config.staging_root = dir.path() + "/staging";
  config.azure_container = container;
  return config;
}

}  // namespace nbu::test
