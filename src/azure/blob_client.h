// Blob REST client: the few Block Blob operations the uploader needs, with per-request retries,
// a process-wide throttle gate, a checksum on every body and secret-free error messages.
#pragma once

#include "azure/credential.h"
#include "azure/http.h"
#include "azure/retry_policy.h"
#include "util/clock.h"
#include "util/crypto.h"
#include "util/status.h"

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

namespace nbu::azure {

inline constexpr const char* kApiVersion = "2025-11-05";
// The operations whose bodies carry a checksum storage verifies (Content-MD5 or
// x-ms-content-crc64): the only ones a checksum mismatch can be reported for.
inline constexpr std::array<const char*, 3> kChecksummedOps = {"PutBlob", "PutBlock",
                                                               "PutBlockList"};

struct BlobClientOptions {
  // Blob service endpoint without trailing slash: "https://acct.blob.core.windows.net" or
  // "http://127.0.0.1:10000/devstoreaccount1" (path style: account is the first path segment).
  std::string endpoint;
  std::string account;  // account name (for Shared Key signing)
  std::string container;
  RetryOptions retry;
  // Per-request timeout = base + body_bytes / min_throughput: never shorter than Azure's own
  // (a block list may take 60 s; a blob or block write 10 minutes per MiB, about 1.7 KiB/s),
  // so a slow uplink shared by many senders is not cut off and resent while storage would
  // still take the body. A connection that stops moving is caught sooner, by the transport's
  // stall check (HttpTransportOptions::stall_time).
  std::chrono::milliseconds timeout_base{60000};
  uint64_t timeout_min_bytes_per_s = (1 << 20) / 600;
};

// The whole-request timeout Execute gives a request with a body of `body_bytes`.
std::chrono::milliseconds RequestTimeout(const BlobClientOptions& options, uint64_t body_bytes);

// A body to send: a byte range of an open file (streamed with pread), or bytes in memory that
// the caller keeps alive until the request returns.
struct Body {
  int fd = -1;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::string_view bytes;  // used when fd < 0
  static Body FromFile(int fd, uint64_t offset, uint64_t length) {
    return {fd, offset, length, {}};
  }
  static Body FromMemory(std::string_view bytes) { return {-1, 0, 0, bytes}; }
};

// What storage checks a request body against before it stores anything: its MD5 (Content-MD5)
// or its CRC-64/NVME (x-ms-content-crc64); a mismatch fails the request.
struct BodyCheck {
  BodyCheck(const Md5Digest& body_md5) : md5(body_md5) {}  // implicit: an MD5 is a check
  static BodyCheck Crc64(uint64_t body_crc64) {
    BodyCheck c;
    c.crc64 = body_crc64;
    return c;
  }
  std::optional<Md5Digest> md5;
  uint64_t crc64 = 0;  // when there is no md5

 private:
  BodyCheck() = default;
};

// Properties set on the committed blob.
struct BlobProperties {
  std::optional<Md5Digest> content_md5;         // whole-blob MD5 (x-ms-blob-content-md5)
  std::string content_type;                     // empty: not set
  std::string access_tier;                      // empty: account default (Hot/Cool/Cold/Archive)
  std::map<std::string, std::string> metadata;  // names must be C# identifiers; values ASCII
  // Preconditions of the write, not stored: only while no blob has the name (If-None-Match: *),
  // or only while the blob is at this ETag (If-Match). Otherwise storage answers 409 or 412,
  // and the write fails as kConflict, having changed nothing.
  bool if_absent = false;
  std::string if_match;
};

struct BlobInfo {
  uint64_t size = 0;
  std::optional<Md5Digest> content_md5;
  std::string etag;
  std::map<std::string, std::string> metadata;  // lower-case names, from x-ms-meta-*
};

struct BlockInfo {
  std::string id;  // raw block id (base64-decoded from the listing)
  uint64_t size = 0;
};

// How storage met one try of a request.
enum class TryOutcome {
  kAnswered,     // any other answer (404, 409, 412, 429, 503...): storage is up, whether or not
                 // it would let us write
  kSucceeded,    // an answer below 400: storage is up and took our credentials for the request
  kUnreachable,  // no answer (connection error, timeout); no token to be had because its
                 // endpoint did not answer or failed. Not a local failure (the body unreadable, an
                 // answer too large): that is not reported.
  kRefused,      // 401 (after one reauthorization) or 403, or the token endpoint refused us
  kServerError,  // 408, or a 5xx that is not throttling (500, 502, 504, a gateway's 507): an
                 // answer, but one that proves nothing works (reads may answer while every write
                 // fails so)
};

// Hooks for metrics; all optional, called from request threads.
struct BlobClientObserver {
  std::function<void(const std::string& reason)> on_retry;  // e.g. "503", "connection"
  std::function<void()> on_throttled;                       // 429/503 seen
  // Storage took a body that did not match the checksum sent with it (Md5Mismatch,
  // Crc64Mismatch, or an echoed CRC-64 that differs): bytes changed between the read that was
  // hashed and the wire (the staging copy, memory, the network). The attempt is repeated.
  // `op` is one of kChecksummedOps.
  std::function<void(const std::string& op)> on_checksum_mismatch;
  std::function<void(TryOutcome)> on_try;  // after every try (not a cancelled one)
  // The container is gone and could not be made again (deleted moments ago: 409
  // ContainerBeingDeleted; credentials that may not create it: 403): every upload waits.
  std::function<void()> on_container_missing;
};

// Thread-safe: one client is shared by all workers.
class BlobClient {
 public:
  BlobClient(BlobClientOptions options, std::shared_ptr<Credential> credential,
             std::shared_ptr<HttpTransport> transport, Clock& clock,
             BlobClientObserver observer = {});

  // PUT ?restype=container; 409 ContainerAlreadyExists is success. So is 403 when the container
  // exists: credentials scoped to the container (a service SAS with sr=c, a role assigned on the
  // container) may use it but never create it. A HEAD of a blob that is not there tells
  // (BlobNotFound, not ContainerNotFound); if that is refused too, the 403 stands.
  Status CreateContainerIfMissing(std::stop_token stop = {});
  // Put Blob (BlockBlob) with the given properties. With an MD5 check the blob stores that MD5
  // (or props.content_md5); with a CRC-64 check it stores the MD5 storage computes of the body
  // it took, and a CRC-64 that storage echoes must be the one sent.
  Status PutBlob(const std::string& blob_name, const Body& body, const BodyCheck& check,
                 const BlobProperties& props, std::stop_token stop = {});
  // Whether storage checks x-ms-content-crc64: a one-byte Put Blob to `probe_blob` carrying the
  // CRC-64 of another byte must fail with Crc64Mismatch. A server that ignores the header
  // (Azurite before 3.37) stores the blob instead, which is then deleted.
  Result<bool> ChecksCrc64(const std::string& probe_blob, std::stop_token stop = {});
  // Put Block: `block_id` is the raw (pre-base64) id; it is base64- then URL-encoded here.
  Status PutBlock(const std::string& blob_name, const std::string& block_id, const Body& body,
                  const Md5Digest& body_md5, std::stop_token stop = {});
  // Put Block List with every id as <Latest> (replay-safe), raw ids as for PutBlock.
  Status PutBlockList(const std::string& blob_name, const std::vector<std::string>& block_ids,
                      const BlobProperties& props, std::stop_token stop = {});
  // HEAD: nullopt when the blob does not exist.
  Result<std::optional<BlobInfo>> GetProperties(const std::string& blob_name,
                                                std::stop_token stop = {});
  // Get Block List (blocklisttype=uncommitted): ids returned raw (base64-decoded); a name with
  // no blob and no staged blocks gives an empty list.
  Result<std::vector<BlockInfo>> GetUncommittedBlocks(const std::string& blob_name,
                                                      std::stop_token stop = {});
  // For tests and tools: whole blob body, and delete (a blob not there is deleted already).
  Result<std::string> GetBlob(const std::string& blob_name, std::stop_token stop = {});
  Status DeleteBlob(const std::string& blob_name, std::stop_token stop = {});
  // For tests and tools: the names of the container's blobs that start with `prefix`, as
  // storage holds them (decoded from its listing), in its order; every page of up to
  // `page_size` names is read.
  Result<std::vector<std::string>> ListBlobNames(const std::string& prefix, int page_size = 1000,
                                                 std::stop_token stop = {});

  // URL of a blob with the name percent-encoded, without any credential (safe to log).
  std::string BlobUrl(const std::string& blob_name) const;
  const BlobClientOptions& options() const { return options_; }
  // How long the quietest request to storage now in flight has gone without moving a byte, and
  // the stall limit at which such a request is given up (HttpTransport).
  std::chrono::nanoseconds LongestSilence() const { return transport_->LongestSilence(); }
  std::chrono::seconds StallTime() const { return transport_->stall_time(); }

 private:
  std::string ContainerUrl() const;  // the endpoint and the container, no query
  // A Put Blob of `body` with `check`'s header and `props`.
  HttpRequest PutBlobRequest(const std::string& blob_name, const Body& body, const BodyCheck& check,
                             const BlobProperties& props) const;
  // Sends with retries (see RetryDelay), reauthorizing once on 401. `writes_blob`: a missing
  // container is recreated and the request sent once more. `observed`: each try is reported to
  // on_try (not for a request whose answer says nothing of whether uploads can go).
  Result<HttpResponse> Execute(HttpRequest req, const std::string& op, std::stop_token stop,
                               std::initializer_list<long> ok_statuses, bool writes_blob = false,
                               bool observed = true);

  BlobClientOptions options_;
  bool path_style_;
  std::shared_ptr<Credential> credential_;
  std::shared_ptr<HttpTransport> transport_;
  Clock& clock_;
  BlobClientObserver observer_;
  ThrottleGate throttle_;
};

}  // namespace nbu::azure
