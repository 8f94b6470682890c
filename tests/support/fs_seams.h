// Test support: the volume's test seams (util/fs.h) set for one scope, and unset on every way out
// of it, an ASSERT's too.
#pragma once

#include <utility>

#include "util/fs.h"

namespace nbu::test {

// fs::SetPathCallForTest(call) while it lives.
class ScopedPathCall {
 public:
  explicit ScopedPathCall(fs::PathCallForTest call) { fs::SetPathCallForTest(std::move(call)); }
  ~ScopedPathCall() { fs::SetPathCallForTest(nullptr); }
  ScopedPathCall(const ScopedPathCall&) = delete;
  ScopedPathCall& operator=(const ScopedPathCall&) = delete;
};

// fs::SetPathPairCallForTest(call) while it lives.
class ScopedPathPairCall {
 public:
  explicit ScopedPathPairCall(fs::PathPairCallForTest call) {
    fs::SetPathPairCallForTest(std::move(call));
  }
  ~ScopedPathPairCall() { fs::SetPathPairCallForTest(nullptr); }
  ScopedPathPairCall(const ScopedPathPairCall&) = delete;
  ScopedPathPairCall& operator=(const ScopedPathPairCall&) = delete;
};

}  // namespace nbu::test
