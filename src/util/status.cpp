#include "util/status.h"

#include <cerrno>
#include <cstring>

namespace nbu {

const char* ToString(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kOk: return "ok";
    case ErrorKind::kTransient: return "transient";
    case ErrorKind::kUnavailable: return "unavailable";
    case ErrorKind::kBusy: return "busy";
    case ErrorKind::kStaging: return "staging";
    case ErrorKind::kVolume: return "volume";
    case ErrorKind::kNotFound: return "not_found";
    case ErrorKind::kConflict: return "conflict";
    case ErrorKind::kPermanent: return "permanent";
    case ErrorKind::kAuth: return "auth";
    case ErrorKind::kCancelled: return "cancelled";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(nbu::ToString(kind_)) + ": " + message_;
}

ErrorKind ErrnoKind(int err) {
  ErrorKind kind = ErrorKind::kPermanent;
  switch (err) {
    case ENOENT: kind = ErrorKind::kNotFound; break;
    case EEXIST:
    case ENOTEMPTY: kind = ErrorKind::kConflict; break;
    // NFS and local transient conditions: retry with backoff, per file.
    case EINTR:
    case EAGAIN:
    case ESTALE:
    case EIO:
    case EBUSY:
    case ETIMEDOUT:
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE: kind = ErrorKind::kTransient; break;
    default: break;
  }
  return kind;
}

Status ErrnoStatus(const std::string& what, int err) {
  return Status(ErrnoKind(err), what + ": " + std::strerror(err));
}

}  // namespace nbu
