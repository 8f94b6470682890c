// Status and Result<T>: expected failures as values, grouped by what the caller should do next.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace nbu {

// What the caller should do with a failure. Context (path + errno text, or HTTP status with request
// id and error code) is attached once, where the error starts.
enum class ErrorKind {
  kOk,
  kTransient,    // retry the same request or step later (5xx, throttling, EINTR, ESTALE)
  kUnavailable,  // the service could not be reached at all (connection refused/reset, timeout):
                 // environmental, not the item's fault, so it does not use up a file's attempts
  kBusy,         // the service throttled us past every retry (429, 503, 500 OperationTimedOut):
                 // it is up and asks for less; never the item's fault
  kStaging,      // this replica's staging disk is full or failing: its trouble, not the item's
  kVolume,       // reading a claim from the NFS volume failed (ESTALE, EIO...): the volume's
                 // trouble, not the item's, unless the volume reads other items fine
  kNotFound,     // the thing is gone (ENOENT, 404): usually someone else got there first
  kConflict,     // the target exists / a precondition failed (EEXIST, 409, 412)
  kPermanent,    // retrying will not help this item: quarantine it (bad name, 400, EACCES)
  kAuth,         // credentials rejected or unavailable: stop and tell the operator (401, 403)
  kCancelled,    // shutdown was requested
};

const char* ToString(ErrorKind kind);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorKind kind, std::string message) : kind_(kind), message_(std::move(message)) {}
  // A failure storage answered with its error code (x-ms-error-code), which callers match
  // rather than the message, whose URL holds the blob's name.
  Status(ErrorKind kind, std::string message, std::string code)
      : kind_(kind), message_(std::move(message)), code_(std::move(code)) {}

  static Status Ok() { return {}; }
  bool ok() const { return kind_ == ErrorKind::kOk; }
  ErrorKind kind() const { return kind_; }
  const std::string& message() const { return message_; }
  const std::string& code() const { return code_; }  // empty unless storage named one
  // "transient: PUT .../blob: HTTP 503 ServerBusy (request id ...)"
  std::string ToString() const;

 private:
  ErrorKind kind_ = ErrorKind::kOk;
  std::string message_;
  std::string code_;
};

// The kind ErrnoStatus gives an errno value.
ErrorKind ErrnoKind(int err);
// Builds a Status from an errno value: "<what>: <strerror>", kind chosen from the errno.
Status ErrnoStatus(const std::string& what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    assert(!std::get<Status>(v_).ok());
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOkStatus;
    return ok() ? kOkStatus : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() { return value(); }
  const T& operator*() const { return value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace nbu
