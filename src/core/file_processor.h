// One file's lifecycle, as an explicit state machine:
//
//   READY --claim--> CLAIMED --stage--> STAGED --upload--> COMMITTED --complete--> DONE
//     |                 |  ^               |                                        (GC removes)
//     |                 |  +-- retry (backoff; transient, torn copy, storage unreachable)
//     |                 +--> DEAD-LETTERED (permanent error, or attempts used up)
//     +--> skipped (claim lost to another replica, or the file changed since it was seen)
//
// Every state is a name on the volume (see layout.h), so a crash at any point leaves a claim
// that recovery finishes; every step is idempotent (same blob name, deterministic block ids).
// On stop, processing ends at the next step boundary and the claim is left for recovery.
#pragma once

#include "azure/blob_client.h"
#include "core/config.h"
#include "core/instruments.h"
#include "core/work_item.h"
#include "telemetry/tracing.h"
#include "util/clock.h"
#include "util/crypto.h"
#include "util/fs.h"

#include <functional>
#include <stop_token>
#include <string>
#include <vector>

namespace nbu::core {

// The staging copy of a claim, hashed while copying (block MD5s are computed by the upload
// threads, in parallel, from the copy).
struct StagedFile {
  fs::Fd fd;  // read/write handle of the staging copy
  std::string path;
  uint64_t size = 0;
  Md5Digest md5{};          // whole file
  uint64_t block_size = 0;  // 0: one Put Blob
  fs::FileStat source;      // the claim's stat when the copy began
};

// Block size for a file: the configured size, grown in 1 MiB steps so a blob never needs more
// than 50,000 blocks. 0 when the file goes in one Put Blob.
uint64_t PlanBlockSize(uint64_t file_size, uint64_t put_blob_max, uint64_t block_size);
// Raw (pre-base64) block id: 16 hex chars derived from the content MD5 and block size, "-", and
// the 6-digit block index. Fixed width; the same bytes always get the same ids, other bytes or
// another block size never do, so staged blocks found after a crash are safe to reuse.
std::string BlockId(const Md5Digest& file_md5, uint64_t block_size, uint64_t index);
std::string ContentTypeFor(const std::string& name);
std::string UtcDate(WallTime t);  // YYYYMMDD

class FileProcessor {
 public:
  struct Deps {
    const Config& config;
    Clock& clock;
    azure::BlobClient& blob;
    Instruments& inst;
    const telemetry::Tracer& tracer;
    InFlight& inflight;
    // Called once a fresh item's claim has settled (won, lost or failed) so the scanner forgets
    // the name and tracks any new file that appears under it from scratch.
    std::function<void(const std::string& session, const std::string& rel)> on_claim_settled;
  };
  explicit FileProcessor(Deps deps) : d_(std::move(deps)) {}

  // Drives one item to DONE, DEAD-LETTERED or skipped; on stop, leaves its claim for recovery.
  void Process(WorkItem item, std::stop_token stop);

  // Moves every dead-lettered file back into the pipeline as a claim of this replica; returns
  // the claims to queue. The blob name stays the one the original claim gave.
  std::vector<ClaimPath> ReviveDeadLetters(std::vector<std::string>* errors);

 private:
  Result<ClaimPath> Claim(const WorkItem& item);
  Result<StagedFile> Stage(const ClaimPath& claim, std::stop_token stop);
  // OK with *skipped set when the blob already held the bytes (recovered claims only).
  Status Upload(const ClaimPath& claim, StagedFile& staged, bool check_existing, bool* skipped,
                telemetry::Span& span, std::stop_token stop);
  Status UploadBlocks(const std::string& blob_name, StagedFile& staged,
                      const azure::BlobProperties& props, telemetry::Span& span,
                      std::stop_token stop);
  Status Complete(const ClaimPath& claim);
  void DeadLetter(const ClaimPath& claim, const Status& why, int attempts);
  Status Attempt(const ClaimPath& claim, bool check_existing, const telemetry::SpanContext& parent,
                 std::stop_token stop, bool* skipped, uint64_t* bytes);

  std::string ProcessingPath(const ClaimPath& c) const;
  Deps d_;
};

}  // namespace nbu::core
