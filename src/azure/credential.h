// Credentials: each one adds authorization to a request just before it is sent (re-run on every
// retry, so signatures and tokens are always fresh).
#pragma once

#include "azure/http.h"
#include "util/status.h"

#include <memory>
#include <string>

namespace nbu::azure {

class Credential {
 public:
  virtual ~Credential() = default;
  // Adds Authorization (or a SAS query) to `req`. `account` is the storage account name and
  // `path_style` whether the account is the first path segment (Azurite). May block to fetch a
  // token; returns kAuth when no credential can be had.
  virtual Status Authorize(HttpRequest& req, const std::string& account, bool path_style) = 0;
  // Called after a 401: drop any cached token so the next Authorize fetches a fresh one. True when
  // the next Authorize may authorize differently (worth one more try); false when it would not.
  virtual bool Invalidate() { return false; }
  // A short description without secrets, e.g. "shared-key(account=devstoreaccount1)".
  virtual std::string Describe() const = 0;
};

}  // namespace nbu::azure
