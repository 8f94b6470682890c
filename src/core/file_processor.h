// One file's lifecycle, as an explicit state machine:
//
//   READY --claim--> CLAIMED --stage--> STAGED --upload--> COMMITTED --complete--> DONE
//     |                 |  ^               |                                        (GC removes)
//     |                 |  +-- retry (backoff; transient, torn copy, storage unreachable,
//     |                 |           the volume failing to read the claim)
//     |                 +--> DEAD-LETTERED (permanent error, or attempts used up)
//     +--> skipped (claim lost to another replica, or the file changed since it was seen)
//
// Every state is a name on the volume (see layout.h), so a crash at any point leaves a claim
// that recovery finishes; every step is idempotent (same blob name, deterministic block ids).
// On stop, requests in flight are aborted (after APP_SHUTDOWN_GRACE_S) and the claim is left for
// recovery, which finds a commit that landed (every commit is conditional).
#pragma once

#include "azure/blob_client.h"
#include "core/config.h"
#include "core/instruments.h"
#include "core/work_item.h"
#include "telemetry/tracing.h"
#include "util/clock.h"
#include "util/crypto.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/md5_pair.h"
#include "util/run_gate.h"

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nbu::core {

// A claim being copied to staging: a file on the staging disk, or, for a file that fits the
// worker's copy buffer, that buffer. Every checksum is computed from the bytes as read from the
// claim, and every request body read back from a staging file carries such a checksum (its
// Content-MD5, or its x-ms-content-crc64), which storage verifies: a bad read-back of the copy
// fails the request instead of landing. (x-ms-content-crc64 is sent only where the start-up probe
// showed storage checks it, or where APP_AZURE_PUT_BLOB_CHECKSUM=crc64 says so without a probe.)
struct StagedFile {
  fs::Fd src;  // the claim, open for reading
  std::string src_path;
  fs::Fd fd;            // read/write handle of the staging copy (none when in memory)
  std::string path;     // empty when in memory
  char* mem = nullptr;  // the in-memory copy: this thread's copy buffer
  uint64_t size = 0;
  uint64_t copied = 0;
  FileHasher hash;          // of the copied bytes: the whole file's MD5 and each block's
  Md5Digest md5{};          // whole file, once the copy is complete
  bool crc_only = false;    // one Put Blob checked by CRC-64: no MD5 is computed here
  uint64_t crc64 = 0;       // of the copied bytes, when crc_only
  uint64_t block_size = 0;  // 0: one Put Blob
  fs::FileStat source;      // the claim's stat when the copy began
  // Times this attempt read the claim whole (FileProcessor::ClaimRead; mutable: the hash of a
  // claim without staging counts too).
  mutable uint64_t whole_reads = 0;
};

// Block size for a file: the configured size, grown in 1 MiB steps so a blob never needs more
// than 50,000 blocks. 0 when the file goes in one Put Blob.
uint64_t PlanBlockSize(uint64_t file_size, uint64_t put_blob_max, uint64_t block_size);
// Raw (pre-base64) block id: 16 hex chars derived from the block's own MD5 and the block size,
// "-", and the 6-digit block index. Fixed width; the same bytes at the same index always get the
// same id, other bytes or another block size never do, so staged blocks found after a crash are
// safe to reuse. Per-block (not whole-file) so a block can be sent as soon as it is copied.
std::string BlockId(const Md5Digest& block_md5, uint64_t block_size, uint64_t index);
// Block slots in a file's staging ring: block i is copied to slot i % slots once block i - slots
// has been sent, so the staging copy holds at most this many blocks whatever the file's size:
// the senders' blocks plus two, which the copy may run ahead by.
uint64_t StagingSlots(uint64_t blocks, int senders);
// The staging room one file can need: a file sent in one Put Blob is staged whole (up to
// APP_AZURE_PUT_BLOB_MAX_BYTES; up to 1 MiB in memory), a larger one in its ring of
// StagingSlots() blocks.
uint64_t StagingNeedPerFile(const Config& c);
// A warning when a staging volume of `volume_bytes` in all is smaller than that: such a file
// could never be staged and would wait (status degraded: staging_full) until the volume grows.
std::optional<std::string> CheckStagingRoom(const Config& c, uint64_t volume_bytes);
// A blob's Content-Type by its name's extension, in any case: a short table of our own first
// (types the system table lacks or names otherwise: .log, .parquet, .exr, .h5), then the
// system's /etc/mime.types (Debian's media-types 10.0: 1,552 extensions of 1,200 types, read
// once), else application/octet-stream.
std::string ContentTypeFor(const std::string& name);
// The extensions (lower case, no dot) and their types that a mime.types text lists, one type and
// its extensions per line, '#' comments; the first type named for an extension wins.
std::unordered_map<std::string, std::string> ParseMimeTypes(std::string_view text);
std::string UtcDate(WallTime t);  // YYYYMMDD
// `ns` since 1970 as rclone writes a modification time to its "mtime" metadata:
// 2006-01-02T15:04:05.000000000Z, in UTC (int64 nanoseconds span the years 1677 to 2262).
std::string RcloneMtime(int64_t ns);

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
    // the name and tracks any new file that appears under it from scratch; `held`: it failed and
    // the file stays in incoming (a permission, an I/O error), to be tried again as it is.
    std::function<void(const std::string& session, const std::string& rel, bool held)>
        on_claim_settled;
    // True: a file sent in one Put Blob is checked by its CRC-64, and the blob stores the MD5
    // storage computes (null or false: by its MD5, computed here).
    const std::atomic<bool>* put_blob_crc64 = nullptr;
    // The completion rename (.claimed -> .done), and the rename that records or hands back a
    // run (SetRuns); null: fs::RenameEntry. Tests' stand-ins.
    std::function<Status(const std::string& from, const std::string& to)> complete_rename = {};
    std::function<Status(const std::string& from, const std::string& to)> runs_rename = {};
    // The look at the marker after the completion rename; null: fs::StatFresh.
    std::function<Result<fs::FileStat>(const std::string& path)> marker_stat = {};
    // The reads of the claim (at `path`, open as `fd`) as it is copied or hashed: as pread(2),
    // -1 with errno on failure; null: ::pread. A test's stand-in.
    std::function<ssize_t(const std::string& path, int fd, char* buf, size_t len, off_t at)>
        claim_pread = {};
    // How long a claim interrupted twice waits to run alone before it runs beside the others,
    // and how long it then runs alone before the others run beside it.
    std::chrono::milliseconds lone_wait_limit = std::chrono::minutes(1);
  };
  // How a Put Blob's body is checked, as the status, the log and the upload span name it.
  static const char* PutBlobChecksumName(bool crc64) { return crc64 ? "crc64" : "md5"; }
  explicit FileProcessor(Deps deps) : d_(std::move(deps)) {}

  // Drives one item to DONE, DEAD-LETTERED or skipped; on stop, leaves its claim for recovery
  // with its run handed back. A claim picked up again counts each earlier run that ended with
  // its process as a failed attempt (see ClaimPath::runs); one that ended so twice or more makes
  // its first attempt alone, so that the file that takes the service down is charged, not those
  // beside it.
  void Process(WorkItem item, std::stop_token stop);
  // Items waiting to begin (for a claim's lone run) are not begun: they end as at a stop,
  // claims left for recovery, files in incoming. For a service shutting down.
  void BeginNoMore() { run_gate_.Close(); }

  // Moves every dead-lettered file back into the pipeline as a claim of this replica; returns
  // the claims to queue. The blob name stays the one the original claim gave. What could not be
  // moved back is told in `errors`, the first kMaxListedErrors of them (a failed tree the
  // volume cannot read may fail for every entry), the rest counted in `unlisted` when given.
  static constexpr size_t kMaxListedErrors = 20;
  std::vector<ClaimPath> ReviveDeadLetters(std::vector<std::string>* errors,
                                           size_t* unlisted = nullptr);

 private:
  Result<ClaimPath> Claim(const WorkItem& item);
  // Opens the claim and creates its staging copy (nothing copied yet). `torn_at`: the claim's
  // stat when its last copy came out torn (nullopt if none did). The file must have stayed so
  // since: it is then known unchanged for the whole wait, not just for one copy that fits
  // between a producer's writes; otherwise kTornCopy again, with `torn_at` moved on.
  Result<StagedFile> OpenStaging(const ClaimPath& claim, std::optional<fs::FileStat>& torn_at);
  // Copies the next `len` bytes of the claim to offset `to` of the staging file (in memory: to
  // their own offset), hashing them into `f.hash`.
  // `ahead`: whether the copy is ahead of what waits on it (see Md5Pair::Update's `patient`).
  Status CopyNext(StagedFile& f, uint64_t len, uint64_t to, std::stop_token stop,
                  const std::function<bool()>& ahead = {});
  // After the last byte: the file must not have changed while it was copied (kTornCopy).
  Status FinishStaging(StagedFile& f);
  // Whether a transfer looks at the blob first, for the bytes it would send.
  enum class Existing {
    kIgnore,
    // After a failed attempt of this run: its commit may have landed with every answer lost
    // (storage out of reach right after it). A blob this claim committed with these bytes is
    // the upload done, not sent again.
    kOwnCommit,
    // A recovered claim (item.check_existing): a blob with these bytes and a source mtime no
    // older than this claim's is complete, found so (*skipped).
    kSameBytes,
  };
  // Copies and sends a file; OK with *skipped set when `existing` found the blob complete.
  Status Transfer(const ClaimPath& claim, StagedFile& f, Existing existing, bool* skipped,
                  telemetry::Span& stage_span, telemetry::Span& upload_span, std::stop_token stop);
  // The claim's MD5, read without staging; kTornCopy if it changed meanwhile.
  Result<Md5Digest> HashSource(const StagedFile& f, std::stop_token stop);
  // Block uploads start as soon as each block is copied, while the copy goes on.
  Status TransferBlocks(const std::string& blob_name, StagedFile& f, azure::BlobProperties props,
                        telemetry::Span& stage_span, telemetry::Span& upload_span,
                        std::stop_token stop);
  // Commits the blob with `commit` in the order of the versions of its file. A file that
  // arrives again under a name already claimed is a new version; both claims may be in flight,
  // or the older one recovered long after, and storage keeps whichever commit lands last. So a
  // commit lands only where no blob is yet (If-None-Match: *), or over the blob it was judged
  // against (If-Match): a blob of this claim (an earlier try landed, its answer was lost) is
  // done; a blob of a file modified later (source_mtime_ns), or at the same time with other
  // bytes, makes this claim superseded (kPermanent: dead-lettered, so kept and reported); any
  // other blob is replaced.
  // `commit` is told when a commit that wanted no blob there was refused while HEAD finds
  // none: another writer's uncommitted blocks hold the name.
  Status CommitInOrder(
      const std::string& blob_name, const StagedFile& f, azure::BlobProperties props,
      const std::function<Status(const azure::BlobProperties&, bool blocks_in_the_way)>& commit,
      std::stop_token stop);
  // A file meant for one Put Blob, sent as one block and committed by a block list: Put Blob
  // with If-None-Match: * is refused as "already exists" where another writer's uncommitted
  // blocks hold the name (an older version sent in blocks, or one a crash abandoned: Azurite
  // counts them, and Azure keeps them for a week), while a block list's condition looks at
  // committed blobs only, and its commit discards those blocks. That writer's commit then
  // finds this blob and is judged by CommitInOrder, as is this one if that commit came first.
  Status PutAsOneBlock(const std::string& blob_name, const StagedFile& f, const azure::Body& body,
                       azure::BlobProperties props, std::stop_token stop);
  Status Complete(const ClaimPath& claim);
  // A failed staging call: out of space or quota, it is this replica's problem, not the file's
  // (kStaging: the attempt waits and does not count, and the status says staging_full).
  Status StagingFailure(const std::string& what, int err);
  // Records staging trouble (the status's staging_full or staging_failing, and the attempt's
  // failure reason), however it was met.
  void CountStagingTrouble(bool full);
  // Up to `want` bytes of the claim at `at`; kTornCopy when it ends early (shorter than when
  // opened), kVolume when the read fails (see ClaimReadFailure).
  Result<size_t> ReadClaim(const StagedFile& f, char* buf, size_t want, uint64_t at) const;
  // A claim read whole: the volume reads files (clears the status's volume_failing, and shows up
  // a failure to read another claim as that claim's own, see FailsOnlyThis).
  void ClaimRead(const StagedFile& f);
  // `s` as a request that sent the staging copy ended: kStaging (the transport could not read
  // the copy back, or it ended early) is counted as staging failing.
  Status SentFromStaging(Status s);
  // After the completion rename (the first or a retried one): a write that landed between the
  // last check and the rename is in the marker, where a sweep cannot tell it (the rename moved
  // the ctime past it). Such a marker becomes a fresh claim of this replica, which the sweep
  // picks up as an orphan and queues; writes after the rename the sweep finds itself. So does a
  // marker whose look fails (EIO, ESTALE): it may hold such a write. Until this look the marker
  // is in flight, so a sweep of this replica leaves it alone; a re-claim that keeps failing is
  // retried with backoff until `stop`, and then false: the marker must stay held.
  bool ClaimAgainIfWritten(const fs::FileStat& source, const ClaimPath& claim,
                           std::stop_token stop);
  // Moves a claim that is not a regular file back to its incoming path.
  void ReturnToIncoming(const ClaimPath& claim);
  // Renames the claim to carry `runs` (in flight under both names meanwhile); on success the
  // claim is the renamed one.
  Status SetRuns(ClaimPath& claim, int runs);
  // For a claim picked up again: counts its interrupted runs as attempts, dead-letters it when
  // they reach the limit, else records this run on it (*recorded: whether that rename worked).
  // False when it is not to be processed.
  bool BeginRun(ClaimPath& claim, telemetry::Span& root, int* attempts, bool* recorded);
  // How a resource every file needs (storage, the volume) went for all files: how often it did
  // its part for one (storage: a blob committed, not skipped; the volume: a claim read whole),
  // and how many attempts it failed (storage unreachable; the claim's read failing, kVolume).
  struct SharedUse {
    std::atomic<uint64_t> successes{0};
    std::atomic<uint64_t> failures{0};
  };
  // A file's record while such a resource keeps failing it: at its last such failure, the
  // resource's counts, and when another file was last seen failing so.
  struct Failing {
    uint64_t successes = 0;
    uint64_t failures = 0;
    MonoTime others_at;
  };
  // Called at each such failure of one file (`u` its record, started at the first): true when
  // the resource is shown up for everyone else, now. Since this file's last failure it did its
  // part for other files, and for unavailable_counts_after_s no other file found it failing.
  // Then it keeps failing this file (a 500 storage always answers for it, a reset; a bad sector
  // of its claim), and the failure counts: the file is dead-lettered, kept and reported, instead
  // of holding a worker for good. An outage that lets some files through fails others too, and
  // counts for none. `own`: the successes this file itself added (its own whole reads of the
  // claim), which say nothing of the resource for others.
  // `refused`: the failures are refusals (401, 403), timed from this file's first, whether or
  // not other files were refused meanwhile.
  bool FailsOnlyThis(std::optional<Failing>& u, SharedUse& use, uint64_t own = 0,
                     bool refused = false);
  // Moves the claim to the failed root with its reason. kKept when the move failed: the claim
  // stays, logged, and its reason is kept for its next pickup (see undelivered_). kGone when the
  // claim was no longer there: another replica took it over (after a stall here), and it is
  // that replica's now, to upload or judge.
  enum class DeadLettered { kMoved, kKept, kGone };
  DeadLettered DeadLetter(const ClaimPath& claim, const Status& why, int attempts);
  Status Attempt(const ClaimPath& claim, Existing existing, const telemetry::SpanContext& parent,
                 std::stop_token stop, std::optional<fs::FileStat>& torn_at, bool* skipped,
                 uint64_t* bytes, bool* committed, std::optional<fs::FileStat>* source,
                 uint64_t* whole_reads);

  std::string ProcessingPath(const ClaimPath& c) const;
  Deps d_;
  // A claim that fails for every file of a directory (a permission, say) fails again at each
  // scan: one warning per 10 s (every failure is still counted and in the status).
  LogLimiter claim_failure_log_{std::chrono::seconds(10)};
  LogLimiter settled_cap_log_{std::chrono::minutes(10)};
  // Claims interrupted kRunAloneFrom times or more run alone (see Process).
  static constexpr int kRunAloneFrom = 2;
  RunGate run_gate_;
  // Whether storage, or the volume, works for others while it fails one file (see Process).
  SharedUse storage_;
  SharedUse volume_;
  // Claims whose dead letter the failed root refused (read-only, full), by the claim's path as
  // this process left it (its run handed back or not): the reason and attempts decided. A sweep
  // queues such a claim again; its next pickup moves it, rather than upload it again for the
  // same end. A claim another replica ran meanwhile has another path (its run recorded), and is
  // judged again; so it is after a restart (this is in memory).
  struct Undelivered {
    Status why;
    int attempts = 0;
  };
  static constexpr size_t kMaxUndelivered = 10000;  // beyond: decided again at the next pickup
  std::mutex undelivered_mu_;
  std::map<std::string, Undelivered> undelivered_;  // guarded by undelivered_mu_
};

}  // namespace nbu::core
