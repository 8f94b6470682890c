#include "core/file_processor.h"

#include "core/blob_name.h"
#include "util/crc64.h"

#include "util/log.h"
#include "util/text.h"
#include "util/utf8.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstddef>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace nbu::core {
namespace {

// Whether `blob` was committed by the claim with `nonce` (its "claim" metadata).
bool CommittedBy(const azure::BlobInfo& blob, const std::string& nonce) {
  const auto it = blob.metadata.find("claim");
  return it != blob.metadata.end() && it->second == nonce;
}

// The source mtime `blob` was committed with (its "source_mtime_ns" metadata); nothing for a
// blob not written by this service: an older one as far as we know.
std::optional<int64_t> SourceMtimeOf(const azure::BlobInfo& blob) {
  const auto it = blob.metadata.find("source_mtime_ns");
  int64_t v = 0;
  if (it == blob.metadata.end() ||
      std::from_chars(it->second.data(), it->second.data() + it->second.size(), v).ec !=
          std::errc()) {
    return std::nullopt;
  }
  return v;
}

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kMaxBlocks = 50'000;
constexpr uint64_t kMaxBlockBytes = 4000 * kMiB;  // so a block blob holds at most ~190.7 TiB
constexpr size_t kCopyBuffer = 1 << 20;

// One copy buffer per thread, reused: allocating (and zeroing) 1 MiB per file cost ~13% of the
// CPU of a 64 KiB file. A file sent in one Put Blob that fits is staged in it.
char* CopyBuffer() {
  thread_local std::unique_ptr<char[]> buffer;
  if (!buffer) buffer.reset(new char[kCopyBuffer]);
  return buffer.get();
}

// Marks a staging copy whose source changed while it was read: wait and try again, not a fault.
const std::string kTornCopy = "source changed while it was copied";
const std::string kNotAFile = "not a regular file";

double Ms(Duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// A failed open, stat or read of the claim. What would be retried (ESTALE, EIO, EBUSY, a soft
// mount's ETIMEDOUT) is the volume's trouble as far as is known: kVolume, waited out like
// unreachable storage unless the volume reads other files fine meanwhile (Process). Anything
// else keeps its kind: ENOENT (taken over), EACCES (permanent).
Status ClaimReadFailure(Status s) {
  if (s.kind() != ErrorKind::kTransient) return s;
  return Status(ErrorKind::kVolume, s.message());
}

}  // namespace

uint64_t PlanBlockSize(uint64_t file_size, uint64_t put_blob_max, uint64_t block_size) {
  if (file_size <= put_blob_max) return 0;
  const uint64_t min_for_limit = (file_size + kMaxBlocks - 1) / kMaxBlocks;
  if (block_size >= min_for_limit) return block_size;
  return (min_for_limit + kMiB - 1) / kMiB * kMiB;
}

uint64_t StagingSlots(uint64_t blocks, int senders) {
  return std::min<uint64_t>(blocks, static_cast<uint64_t>(std::max(1, senders)) + 2);
}

uint64_t StagingNeedPerFile(const Config& c) {
  const uint64_t ring = StagingSlots(UINT64_MAX, c.azure_max_concurrency) * c.azure_block_size;
  return std::max(ring, c.azure_put_blob_max_bytes);
}

std::optional<std::string> CheckStagingRoom(const Config& c, uint64_t volume_bytes) {
  const uint64_t need = StagingNeedPerFile(c);
  if (volume_bytes >= need) return std::nullopt;
  return "APP_LOCAL_STAGING_ROOT (" + c.staging_root + ") holds " +
         std::to_string(volume_bytes / kMiB) + " MiB in all, and one file can need up to " +
         std::to_string((need + kMiB - 1) / kMiB) +
         " MiB of it (the larger of APP_AZURE_PUT_BLOB_MAX_BYTES and (APP_AZURE_MAX_CONCURRENCY "
         "+ 2) x APP_AZURE_BLOCK_SIZE): such files will wait until it grows";
}

std::string BlockId(const Md5Digest& block_md5, uint64_t block_size, uint64_t index) {
  Md5 tag;
  tag.Update(block_md5.data(), block_md5.size());
  tag.Update(std::to_string(block_size));
  const Md5Digest t = tag.Final();
  char idx[16];
  std::snprintf(idx, sizeof idx, "%06llu", static_cast<unsigned long long>(index));
  return HexEncode(std::string_view(reinterpret_cast<const char*>(t.data()), 8)) + "-" + idx;
}

std::string ContentTypeFor(const std::string& name) {
  static const std::pair<const char*, const char*> kTypes[] = {
      {".txt", "text/plain"},
      {".csv", "text/csv"},
      {".json", "application/json"},
      {".xml", "application/xml"},
      {".html", "text/html"},
      {".log", "text/plain"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".jpeg", "image/jpeg"},
      {".tif", "image/tiff"},
      {".tiff", "image/tiff"},
      {".gif", "image/gif"},
      {".pdf", "application/pdf"},
      {".zip", "application/zip"},
      {".gz", "application/gzip"},
      {".tar", "application/x-tar"},
      {".parquet", "application/vnd.apache.parquet"},
      {".mp4", "video/mp4"},
      {".exr", "image/x-exr"},
      {".h5", "application/x-hdf5"},
  };
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return "application/octet-stream";
  const std::string ext = LowerAscii(std::string_view(name).substr(dot));
  for (const auto& [e, type] : kTypes) {
    if (ext == e) return type;
  }
  // Read at the first upload (a thread-safe static), and kept: 1,552 short entries here.
  static const std::unordered_map<std::string, std::string> kSystem = [] {
    auto text = fs::ReadSmallFile("/etc/mime.types", 4 << 20);
    return text.ok() ? ParseMimeTypes(*text) : std::unordered_map<std::string, std::string>{};
  }();
  const auto it = kSystem.find(ext.substr(1));
  return it == kSystem.end() ? "application/octet-stream" : it->second;
}

std::unordered_map<std::string, std::string> ParseMimeTypes(std::string_view text) {
  std::unordered_map<std::string, std::string> out;
  const auto is_blank = [](char c) { return c == ' ' || c == '\t' || c == '\r'; };
  while (!text.empty()) {
    const size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    if (const size_t hash = line.find('#'); hash != std::string_view::npos) {
      line = line.substr(0, hash);
    }
    std::string type;
    while (!line.empty()) {
      while (!line.empty() && is_blank(line.front())) line.remove_prefix(1);
      size_t end = 0;
      while (end < line.size() && !is_blank(line[end])) ++end;
      if (end == 0) break;
      const std::string_view word = line.substr(0, end);
      line.remove_prefix(end);
      if (type.empty()) {
        // "type/subtype" of RFC 6838's name characters, as it goes into a header: a line that
        // does not start with one is skipped whole.
        const bool valid =
            std::count(word.begin(), word.end(), '/') == 1 &&
            std::all_of(word.begin(), word.end(), [](char c) {
              return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
                     std::string_view("!#$&-^_.+/").find(c) != std::string_view::npos;
            });
        if (!valid) break;
        type.assign(word);
      } else {
        out.try_emplace(LowerAscii(word), type);
      }
    }
  }
  return out;
}

std::string UtcDate(WallTime t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%04d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  return buf;
}

std::string RcloneMtime(int64_t ns) {
  constexpr int64_t kNs = 1'000'000'000;
  int64_t secs = ns / kNs;
  int64_t frac = ns % kNs;
  if (frac < 0) {  // floor, so that the fraction is what lies after the second
    frac += kNs;
    --secs;
  }
  const auto tt = static_cast<std::time_t>(secs);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%09lldZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<long long>(frac));
  return buf;
}

std::string FileProcessor::ProcessingPath(const ClaimPath& c) const {
  return fs::Join(d_.config.processing_root, c.Path());
}

Result<ClaimPath> FileProcessor::Claim(const WorkItem& item) {
  const std::string src = fs::Join(fs::Join(d_.config.incoming_dir, item.session), item.rel);
  // The file may have changed (or been replaced) while it waited in the queue.
  auto now_stat = fs::Stat(src);
  if (!now_stat.ok()) return now_stat.status();
  if (!(*now_stat == item.observed)) {
    return Status(ErrorKind::kConflict, "changed since it was found ready");
  }
  ClaimPath c;
  c.date = UtcDate(d_.clock.WallNow());
  c.session = item.session;
  c.reldir = item.rel.find('/') == std::string::npos ? "" : fs::Dirname(item.rel);
  c.base = fs::Basename(item.rel);
  c.owner = d_.config.replica_id;
  c.state = ClaimState::kClaimed;
  // Each try renames to a name of its own (a fresh nonce). A try with a passing error may have
  // landed unseen (its reply lost), and the producer may since have put a new file under the
  // source name (a second `x` can arrive while the first is in flight): a next try onto the same
  // name would rename that file over the claim and unlink the first version unsent. After such
  // an error the name is looked at, and once the source is gone every name tried so far; a
  // claim that landed unseen all the same is an orphan of ours, which the sweep picks up. Each
  // name is in flight before it exists: a sweep between the rename and the registration would
  // take it for an orphan and queue it a second time.
  struct Unregister {
    InFlight& inflight;
    std::vector<ClaimPath> tried;  // every name tried but the one kept
    ~Unregister() {
      for (const auto& t : tried) inflight.Remove(t.Path());
    }
  } unregister{d_.inflight, {}};
  const auto keep = [&](size_t i) {  // the name is ours alone
    ClaimPath kept = unregister.tried[i];
    unregister.tried.erase(unregister.tried.begin() + static_cast<std::ptrdiff_t>(i));
    return kept;
  };
  // Rename first; RenameEntry creates the target directory only when the rename says it is
  // missing (the common case needs one syscall; GC may also remove an empty directory between
  // claims).
  Status last;
  for (int attempt = 0; attempt < 5; ++attempt) {
    c.nonce = NewNonce();
    d_.inflight.Add(c.Path());
    unregister.tried.push_back(c);
    last = fs::RenameEntry(src, ProcessingPath(c));
    // Not found: the source gone (RenameEntry tells a pruned target directory apart), taken by
    // another replica or by an earlier try of ours that landed unseen.
    if (last.kind() == ErrorKind::kNotFound) {
      for (size_t i = 0; i + 1 < unregister.tried.size(); ++i) {
        if (fs::StatFresh(ProcessingPath(unregister.tried[i])).ok()) return keep(i);
      }
      return Status(ErrorKind::kNotFound, "claimed by another replica");
    }
    if (!last.ok() && last.kind() != ErrorKind::kTransient) return last;
    if (!last.ok()) d_.clock.SleepFor(std::chrono::milliseconds(50 << attempt), {});
    if (last.ok() || fs::StatFresh(ProcessingPath(c)).ok()) {
      return keep(static_cast<size_t>(attempt));
    }
  }
  return last;
}

Result<StagedFile> FileProcessor::OpenStaging(const ClaimPath& claim,
                                              std::optional<fs::FileStat>& torn_at) {
  StagedFile f;
  f.src_path = ProcessingPath(claim);
  auto src = fs::OpenRead(f.src_path);  // open revalidates NFS attributes (close-to-open)
  if (!src.ok()) return ClaimReadFailure(src.status());
  f.src = std::move(*src);
  auto st = fs::FStat(f.src.get());
  if (!st.ok()) return ClaimReadFailure(st.status());
  if (!st->is_regular) return Status(ErrorKind::kConflict, kNotAFile);
  if (torn_at && !(*torn_at == *st)) {
    torn_at = *st;  // written to during the wait: wait again from here
    return Status(ErrorKind::kTransient, kTornCopy);
  }
  f.source = *st;
  f.size = st->size;
  f.block_size =
      PlanBlockSize(f.size, d_.config.azure_put_blob_max_bytes, d_.config.azure_block_size);
  if (f.block_size > kMaxBlockBytes) {  // before its ring of such blocks fills staging
    return Status(ErrorKind::kPermanent,
                  "the file holds " + std::to_string(f.size) +
                      " bytes, more than a block blob can (50,000 blocks of 4,000 MiB, about "
                      "190.7 TiB)");
  }
  f.crc_only = f.block_size == 0 && d_.put_blob_crc64 != nullptr && d_.put_blob_crc64->load();
  if (!f.crc_only) f.hash = FileHasher(f.block_size);
  if (f.block_size == 0 && f.size <= kCopyBuffer) {
    // Held in memory: the same snapshot of the claim as a staging file (every later read of it
    // is this buffer), without creating, writing, reading back and unlinking one per file. The
    // buffer is this worker's, in use until the file's attempt ends.
    f.mem = CopyBuffer();
    return f;
  }
  f.path = fs::Join(d_.config.staging_root, StagingPath(claim));
  // Create first and make the directory only when it is missing (one syscall in the common
  // case). O_TRUNC: a leftover of an earlier attempt of this claim is simply overwritten.
  auto create = [&] {
    return ::open(f.path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  };
  int fd = create();
  // A sweep prunes empty staging directories: one made here can go again before the create,
  // or between MkdirAll's steps (the date directory, then the session's below it).
  for (int tries = 0; fd < 0 && errno == ENOENT && tries < 3; ++tries) {
    int mkdir_errno = 0;
    const Status made = fs::MkdirAll(fs::Dirname(f.path), 0755, &mkdir_errno);
    fd = create();  // also when the directory could not be made: the create's error classifies
    // ... unless it only says the directory is missing: then the mkdir's does (ENOSPC, EDQUOT:
    // staging is full, not failing).
    const int err = fd < 0 && errno == ENOENT ? mkdir_errno : errno;
    if (fd < 0 && !made.ok() && err != ENOENT) return StagingFailure(made.message(), err);
  }
  if (fd < 0) return StagingFailure("create " + f.path, errno);
  f.fd = fs::Fd(fd);
  ::posix_fadvise(f.src.get(), 0, 0, POSIX_FADV_SEQUENTIAL);  // read in 1 MiB pieces
  return f;
}

Result<size_t> FileProcessor::ReadClaim(const StagedFile& f, char* buf, size_t want,
                                        uint64_t at) const {
  while (true) {
    const ssize_t n =
        d_.claim_pread ? d_.claim_pread(f.src_path, f.src.get(), buf, want, static_cast<off_t>(at))
                       : ::pread(f.src.get(), buf, want, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ClaimReadFailure(ErrnoStatus("read " + f.src_path, errno));
    if (n == 0) return Status(ErrorKind::kTransient, kTornCopy);
    return static_cast<size_t>(n);
  }
}

void FileProcessor::ClaimRead(const StagedFile& f) {
  ++f.whole_reads;
  volume_.successes.fetch_add(1);
  d_.inst.volume.Read(d_.clock.Now());
}

namespace {

// After the last byte: a file that grew or was rewritten while it was read shows in its stat,
// as the file server has it now (another host's writes do not show in attributes cached at open).
// The change time too: a rewrite that keeps the size and puts the mtime back (rsync --inplace
// -t) moves it. Nothing of ours renames the claim between the open and this check; but a file
// with other names (hard links) has its ctime moved by their claims' renames, so for it the
// ctime says nothing (such a rewrite of it goes unseen).
Status ClaimUnchanged(const StagedFile& f) {
  auto st = fs::FStatFresh(f.src.get());
  if (!st.ok()) return ClaimReadFailure(st.status());
  const bool one_name = st->nlink <= 1 && f.source.nlink <= 1;
  if (!(*st == f.source) || (one_name && st->ctime_ns != f.source.ctime_ns)) {
    return Status(ErrorKind::kTransient, kTornCopy);
  }
  return Status::Ok();
}

}  // namespace

Status FileProcessor::CopyNext(StagedFile& f, uint64_t len, uint64_t to, std::stop_token stop,
                               const std::function<bool()>& ahead) {
  while (len > 0) {
    if (stop.stop_requested()) return Status(ErrorKind::kCancelled, "stopping");
    // In memory the bytes land in place; otherwise they pass through the buffer to the file.
    char* const buf = f.mem != nullptr ? f.mem + f.copied : CopyBuffer();
    auto got =
        ReadClaim(f, buf, static_cast<size_t>(std::min<uint64_t>(kCopyBuffer, len)), f.copied);
    if (!got.ok()) return got.status();
    if (f.crc_only) {
      f.crc64 = Crc64(f.crc64, buf, *got);
    } else {
      f.hash.Update(buf, *got, ahead && ahead());
    }
    for (size_t off = 0; f.mem == nullptr && off < *got;) {
      const ssize_t w = ::pwrite(f.fd.get(), buf + off, *got - off, static_cast<off_t>(to + off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return StagingFailure("write " + f.path, errno);
      off += static_cast<size_t>(w);
    }
    f.copied += *got;
    to += *got;
    len -= *got;
  }
  return Status::Ok();
}

Status FileProcessor::FinishStaging(StagedFile& f) {
  // CopyNext copied exactly `size` bytes (a short file is torn there).
  if (Status s = ClaimUnchanged(f); !s.ok()) return s;
  ClaimRead(f);
  if (!f.crc_only) f.md5 = f.hash.FinishFile();
  if (d_.config.staging_fsync && f.mem == nullptr && ::fsync(f.fd.get()) != 0) {
    return StagingFailure("fsync " + f.path, errno);
  }
  return Status::Ok();
}

Status FileProcessor::StagingFailure(const std::string& what, int err) {
  const bool full = err == ENOSPC || err == EDQUOT;
  // The staging disk failing (read-only after an error, permissions, I/O errors, its directory
  // pruned meanwhile) is this replica's trouble too. A name it cannot hold is the file's.
  const bool failing = err == EROFS || err == EACCES || err == EPERM || err == EIO ||
                       err == ENOENT || err == EMFILE || err == ENFILE || err == ENOMEM;
  if (!full && !failing) return ErrnoStatus(what, err);
  CountStagingTrouble(full);
  return Status(ErrorKind::kStaging, std::string(full ? "staging is full: " : "staging fails: ") +
                                         ErrnoStatus(what, err).message() + " (" +
                                         d_.config.staging_root + ")");
}

void FileProcessor::CountStagingTrouble(bool full) {
  (full ? d_.inst.staging_full_at : d_.inst.staging_failing_at) =
      d_.clock.Now().time_since_epoch().count();
  d_.inst.attempt_failures.Add(1, {{"reason", full ? "staging_full" : "staging_failing"}});
}

Status FileProcessor::SentFromStaging(Status s) {
  if (s.kind() == ErrorKind::kStaging) CountStagingTrouble(/*full=*/false);
  return s;
}

Result<Md5Digest> FileProcessor::HashSource(const StagedFile& f, std::stop_token stop) {
  FileHasher hash(0);
  char* const buf = CopyBuffer();  // f.mem too for a small file: not called once it holds a copy
  for (uint64_t off = 0; off < f.size;) {
    if (stop.stop_requested()) return Status(ErrorKind::kCancelled, "stopping");
    auto got =
        ReadClaim(f, buf, static_cast<size_t>(std::min<uint64_t>(kCopyBuffer, f.size - off)), off);
    if (!got.ok()) return got.status();
    hash.Update(buf, *got);
    off += *got;
  }
  if (Status s = ClaimUnchanged(f); !s.ok()) return s;
  ClaimRead(f);
  return hash.FinishFile();
}

Status FileProcessor::TransferBlocks(const std::string& blob_name, StagedFile& f,
                                     azure::BlobProperties props, telemetry::Span& stage_span,
                                     telemetry::Span& upload_span, std::stop_token stop) {
  const uint64_t n = (f.size + f.block_size - 1) / f.block_size;
  auto block_len = [&](uint64_t i) { return std::min(f.block_size, f.size - i * f.block_size); };

  // Resume: blocks of these exact bytes staged by an earlier attempt need not be sent again.
  std::vector<std::optional<azure::BlockInfo>> listed(n);
  if (auto blocks = d_.blob.GetUncommittedBlocks(blob_name, stop); blocks.ok()) {
    for (auto& b : *blocks) {
      const uint64_t idx = b.id.size() == 23 ? std::strtoull(b.id.c_str() + 17, nullptr, 10) : n;
      if (idx < n && b.size == block_len(idx)) listed[idx] = std::move(b);
    }
  } else if (blocks.status().kind() != ErrorKind::kNotFound &&
             blocks.status().kind() != ErrorKind::kCancelled) {  // stopping: nothing is sent
    LogWarn("listing staged blocks failed; sending every block",
            {{"blob", blob_name}, {"error", blocks.status().ToString()}});
  }

  // The copy (this thread) publishes block i's MD5 and id, then `ready` = i + 1; the senders
  // take blocks in order and wait for them to be ready.
  std::vector<Md5Digest> md5s(n);
  std::vector<std::string> ids(n);
  std::mutex mu;
  std::condition_variable cv;
  uint64_t ready = 0;
  bool failed = false;
  Status first_error;
  auto fail = [&](Status s) {
    {
      std::lock_guard lock(mu);
      if (failed) return;
      failed = true;
      first_error = std::move(s);
    }
    cv.notify_all();
  };
  // Staged in a ring of block slots; a slot is rewritten only after its block was sent (or found
  // staged already), so each Put Block, retries included, reads the bytes that were hashed.
  const uint64_t slots = StagingSlots(n, d_.config.azure_max_concurrency);
  std::vector<char> finished(n, 0);  // guarded by mu
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> sent{0};
  std::atomic<uint64_t> resumed{0};
  auto finish = [&](uint64_t i) {
    {
      std::lock_guard lock(mu);
      finished[i] = 1;
    }
    cv.notify_all();
  };
  // The file's trace context on the senders' threads too: their retry and recreate lines are
  // the file's.
  const LogTraceContext file_ctx = CurrentLogTraceContext();
  auto send = [&] {
    const ScopedLogTraceContext log_ctx(file_ctx.trace_id, file_ctx.span_id);
    while (true) {
      const uint64_t i = next.fetch_add(1);
      if (i >= n) return;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return failed || ready > i; });
        if (failed) return;
      }
      if (listed[i] && listed[i]->id == ids[i]) {
        resumed.fetch_add(1);
        finish(i);
        continue;
      }
      const uint64_t at = (i % slots) * f.block_size;
      Status s = SentFromStaging(d_.blob.PutBlock(
          blob_name, ids[i], azure::Body::FromFile(f.fd.get(), at, block_len(i)), md5s[i], stop));
      if (!s.ok()) return fail(std::move(s));
      sent.fetch_add(1);
      d_.inst.blocks_uploaded.Add();
      finish(i);
    }
  };
  std::vector<std::jthread> senders;
  const auto threads =
      std::min<uint64_t>(static_cast<uint64_t>(std::max(1, d_.config.azure_max_concurrency)), n);
  for (uint64_t t = 0; t < threads; ++t) senders.emplace_back(send);

  Status copied;
  uint64_t done = 0;  // blocks copied (this thread's copy of `ready`)
  for (; done < n; ++done) {
    const uint64_t i = done;
    {
      // A sender failed: the attempt is over. Otherwise wait for the slot's previous block.
      std::unique_lock lock(mu);
      cv.wait(lock, [&] { return failed || i < slots || finished[i - slots] != 0; });
      if (failed) break;
    }
    // While a copied block waits for a sender (every sender busy), the copy is ahead of the
    // uploads: its hashing may wait longer to share a pass with another file's.
    copied = CopyNext(f, block_len(i), (i % slots) * f.block_size, stop,
                      [&] { return next.load() < i; });
    if (!copied.ok()) break;
    md5s[i] = f.hash.FinishBlock();
    ids[i] = BlockId(md5s[i], f.block_size, i);
    {
      std::lock_guard lock(mu);
      ready = i + 1;
    }
    cv.notify_all();
  }
  if (copied.ok() && done == n) copied = FinishStaging(f);
  if (!copied.ok()) {
    stage_span.SetError(copied.ToString());
    fail(copied);
  }
  stage_span.End();
  senders.clear();  // joins
  upload_span.AddEvent("blocks", {{"count", static_cast<int64_t>(n)},
                                  {"sent", static_cast<int64_t>(sent.load())},
                                  {"resumed", static_cast<int64_t>(resumed.load())},
                                  {"block_size", static_cast<int64_t>(f.block_size)},
                                  {"staging_slots", static_cast<int64_t>(slots)}});
  d_.inst.blocks_resumed.Add(static_cast<double>(resumed.load()));
  if (failed) return first_error;
  // Written to while the last blocks were sent: a commit of this copy would discard the blocks
  // staged and not listed, and the next attempt would send every one again. Left uncommitted,
  // that attempt sends only the blocks that changed. (A write after this look is caught after
  // the commit, as for a Put Blob.)
  if (Status s = ClaimUnchanged(f); !s.ok()) return s;
  props.content_md5 = f.md5;
  return CommitInOrder(
      blob_name, f, std::move(props),
      [&](const azure::BlobProperties& p, bool) {
        return d_.blob.PutBlockList(blob_name, ids, p, stop);
      },
      stop);
}

Status FileProcessor::CommitInOrder(
    const std::string& blob_name, const StagedFile& f, azure::BlobProperties props,
    const std::function<Status(const azure::BlobProperties&, bool blocks_in_the_way)>& commit,
    std::stop_token stop) {
  // Whether `blob` holds the bytes staged: its MD5, which storage computed of the bytes it got,
  // against ours; in CRC-64 mode, where there is none of ours yet, of the copy in memory, or of
  // the claim read again (once: a rare path, and cheaper than sending the file; not into the
  // copy buffer, which holds a small file's copy, the body of the next commit).
  std::optional<Md5Digest> hashed;
  if (!f.crc_only) hashed = f.md5;
  const auto holds_ours = [&](const azure::BlobInfo& blob) -> Result<bool> {
    if (blob.size != f.size || !blob.content_md5) return false;
    if (!hashed && f.mem != nullptr) hashed = Md5::Of(std::string_view(f.mem, f.size));
    if (!hashed) {
      Result<Md5Digest> h = HashSource(f, stop);
      if (!h.ok()) return h.status();
      hashed = *h;
    }
    return *hashed == *blob.content_md5;
  };
  props.if_absent = true;
  props.if_match.clear();
  Status last;
  // A commit refused as "already exists" where HEAD finds no blob: the name holds another
  // writer's uncommitted blocks (see PutAsOneBlock).
  bool blocks_in_the_way = false;
  for (int round = 0; round < 5; ++round) {
    last = commit(props, blocks_in_the_way);
    if (last.kind() != ErrorKind::kConflict) return last;
    auto info = d_.blob.GetProperties(blob_name, stop);
    if (!info.ok()) return info.status();
    // No ETag (a proxy that strips it): nothing to make the next commit conditional on, and an
    // unconditional one could go over a newer version committed after this HEAD. Counted
    // against the file, so a path that always strips it ends in a dead letter that says so.
    if (info->has_value() && (*info)->etag.empty()) {
      return Status(ErrorKind::kTransient,
                    "commit " + blob_name + ": storage answered HEAD without an ETag");
    }
    blocks_in_the_way = props.if_absent && !info->has_value();
    props.if_absent = !info->has_value();  // deleted meanwhile: the name is free again
    props.if_match = info->has_value() ? (*info)->etag : "";
    if (!info->has_value()) continue;
    const azure::BlobInfo& blob = **info;
    const auto theirs = SourceMtimeOf(blob);
    // This claim's own commit, whose answer was lost: done, if it holds the bytes staged. The
    // claim may have been rewritten at the same size since, or storage may have kept other
    // bytes than were hashed (a CRC-64 echo that differed); such a blob is replaced. (Replaced
    // unseen, a commit whose every answer is lost would replace itself round after round.)
    if (CommittedBy(blob, props.metadata.at("claim"))) {
      const Result<bool> same = holds_ours(blob);
      if (!same.ok()) return same.status();
      if (*same) return Status::Ok();
      // An earlier copy of this very claim: replaced. Unless the claim was taken over meanwhile
      // (a takeover keeps the nonce): then the blob may be the new owner's later copy, and this
      // stale one must not go over it. Asked of the file server: a cached lookup may still
      // find the claim for a while after the takeover's rename, and an error leaves it untold.
      // A later source mtime than this copy's is a later copy whatever the lookup says: not
      // replaced, and judged below as any newer version is.
      if (!theirs || *theirs <= f.source.mtime_ns) {
        const auto st = fs::StatFresh(f.src_path);
        if (!st.ok() && st.status().kind() == ErrorKind::kNotFound) {
          return Status(ErrorKind::kNotFound,
                        "claim taken over by another replica before the commit");
        }
        if (!st.ok()) return ClaimReadFailure(st.status());
        continue;
      }
    }
    if (theirs && *theirs == f.source.mtime_ns) {
      // Another claim's version with the same source mtime (a copy that keeps times, a build
      // with a fixed timestamp, a server with coarse times): which one is newer cannot be told.
      // The same bytes are done; other bytes are not put over it, nor lost: kept here.
      const Result<bool> same = holds_ours(blob);
      if (!same.ok()) return same.status();
      if (*same) return Status::Ok();
      d_.inst.files_superseded.Add();
      return Status(ErrorKind::kPermanent,
                    "superseded, perhaps: the blob holds another version of this file with the "
                    "same source mtime (" +
                        std::to_string(*theirs) +
                        " ns), so which is newer cannot be told; this version is kept here, not "
                        "put over it (touch it and retry it to put it over the blob)");
    }
    if (theirs && *theirs > f.source.mtime_ns) {
      d_.inst.files_superseded.Add();
      return Status(ErrorKind::kPermanent,
                    "superseded: the blob holds a newer version of this file (source mtime " +
                        std::to_string(*theirs) + " ns, this one's " +
                        std::to_string(f.source.mtime_ns) +
                        " ns); this version is kept here, not put over it (an earlier try of it "
                        "may have landed and been replaced)");
    }
  }
  return Status(ErrorKind::kTransient,
                "the blob changed under each of 5 commits (other writers of the same name): " +
                    last.ToString());
}

Status FileProcessor::Transfer(const ClaimPath& claim, StagedFile& f, Existing existing,
                               bool* skipped, telemetry::Span& stage_span,
                               telemetry::Span& upload_span, std::stop_token stop) {
  const std::string blob_name = claim.BlobName();
  // A recovered claim may have been committed just before a crash, and an attempt after a
  // failed one may find its own commit landed: a blob of the same size and MD5 is not sent
  // again. The claim is hashed on its own first: a staging ring never holds a whole large file,
  // and a blob of its size is rare. Another claim's commit of the same bytes counts only with a
  // source mtime no older than this claim's: the same bytes left under an older version's mtime
  // would let a version between the two, committed later, count as newer and go over them.
  if (existing != Existing::kIgnore) {
    auto info = d_.blob.GetProperties(blob_name, stop);
    const auto as_new = [&](const azure::BlobInfo& blob) {
      const auto theirs = SourceMtimeOf(blob);
      return theirs && *theirs >= f.source.mtime_ns;
    };
    if (info.ok() && info->has_value() && (*info)->size == f.size && (*info)->content_md5 &&
        (CommittedBy(**info, claim.nonce) ||
         (existing == Existing::kSameBytes && as_new(**info)))) {
      auto md5 = HashSource(f, stop);
      if (!md5.ok()) {
        stage_span.SetError(md5.status().ToString());
        return md5.status();
      }
      if (*md5 == *(*info)->content_md5) {
        *skipped = existing == Existing::kSameBytes;  // else uploaded, by the earlier attempt
        return Status::Ok();
      }
    }
  }
  azure::BlobProperties props;
  props.content_type = ContentTypeFor(claim.base);
  props.access_tier = d_.config.azure_access_tier;
  props.metadata = {{"source_size", std::to_string(f.size)},
                    {"source_mtime_ns", std::to_string(f.source.mtime_ns)},
                    {"session", claim.session},
                    {"replica", d_.config.replica_id},
                    {"claim", claim.nonce},
                    // the same time as rclone's tools read it (lsl, copy, check)
                    {"mtime", RcloneMtime(f.source.mtime_ns)}};
  if (f.block_size != 0) {
    return TransferBlocks(blob_name, f, std::move(props), stage_span, upload_span, stop);
  }
  Status copied = CopyNext(f, f.size, 0, stop);
  if (copied.ok()) copied = FinishStaging(f);
  if (!copied.ok()) {
    stage_span.SetError(copied.ToString());
    return copied;
  }
  stage_span.End();
  const azure::Body body = f.mem != nullptr
                               ? azure::Body::FromMemory(std::string_view(f.mem, f.size))
                               : azure::Body::FromFile(f.fd.get(), 0, f.size);
  const azure::BodyCheck check =
      f.crc_only ? azure::BodyCheck::Crc64(f.crc64) : azure::BodyCheck(f.md5);
  return CommitInOrder(
      blob_name, f, std::move(props),
      [&](const azure::BlobProperties& p, bool blocks_in_the_way) {
        if (blocks_in_the_way) return PutAsOneBlock(blob_name, f, body, p, stop);
        return SentFromStaging(d_.blob.PutBlob(blob_name, body, check, p, stop));
      },
      stop);
}

Status FileProcessor::PutAsOneBlock(const std::string& blob_name, const StagedFile& f,
                                    const azure::Body& body, azure::BlobProperties props,
                                    std::stop_token stop) {
  Md5Digest md5 = f.md5;
  // No MD5 of ours yet, and a block list's blob gets none from storage. A small file's bytes are
  // in memory, the body itself: hashed there, not read again into the copy buffer, which is that
  // memory.
  if (f.crc_only && f.mem != nullptr) {
    md5 = Md5::Of(std::string_view(f.mem, f.size));
  } else if (f.crc_only) {
    auto hashed = HashSource(f, stop);
    if (!hashed.ok()) return hashed.status();
    md5 = *hashed;
  }
  props.content_md5 = md5;
  // An empty file has no block: Azure refuses an empty Put Block (Azurite takes it), and an
  // empty block list makes the 0-byte blob.
  std::vector<std::string> ids;
  if (f.size > 0) {
    ids.push_back(BlockId(md5, f.size, 0));
    if (Status s = SentFromStaging(d_.blob.PutBlock(blob_name, ids[0], body, md5, stop)); !s.ok()) {
      return s;
    }
  }
  Status s = d_.blob.PutBlockList(blob_name, ids, props, stop);
  if (s.code() == "InvalidBlockList") {
    // The other writer committed meanwhile, which discarded our block, and storage checked the
    // list before our If-None-Match (Azurite answers 409): its blob is there now, for
    // CommitInOrder to judge.
    return Status(ErrorKind::kConflict, s.message());
  }
  return s;
}

Status FileProcessor::Complete(const ClaimPath& claim) {
  const std::string from = ProcessingPath(claim);
  const std::string to = ProcessingPath(claim.WithState(ClaimState::kDone));
  Status s = d_.complete_rename ? d_.complete_rename(from, to) : fs::RenameEntry(from, to);
  if (s.kind() == ErrorKind::kNotFound) {
    // Over NFS, a rename the server did whose answer was lost is answered so on the client's
    // resend: the marker is there, and the claim complete.
    if (fs::Stat(to).ok()) return Status::Ok();
    // Another replica took the claim over (our lease looked dead): it uploads the same bytes to
    // the same blob, so the outcome is the same. Nothing to mark here.
    LogWarn("claim vanished before completion: another replica took it over, or it was removed",
            {{"blob", claim.BlobName()}});
    return Status::Ok();
  }
  return s;
}

void FileProcessor::ReturnToIncoming(const ClaimPath& claim) {
  const std::string from = ProcessingPath(claim);
  const std::string back =
      fs::Join(fs::Join(d_.config.incoming_dir, claim.session), claim.RelPath());
  // A directory goes back by a rename, which cannot replace a file the producer wrote under
  // that name since (nor a directory holding anything). A rename of anything else would replace
  // that file: it gets the name back only while the name is free (a link, then the claim's name
  // removed), and else stays claimed, reported, for the next pickup to try again.
  // Neither when what it is cannot be told (a passing error): it stays claimed, reported.
  Status s;
  if (auto st = fs::StatFresh(from); !st.ok()) {
    s = st.status();
  } else if (!st->is_dir) {
    s = fs::LinkNew(from, back);
    if (s.kind() == ErrorKind::kNotFound && fs::MkdirAll(fs::Dirname(back)).ok()) {
      s = fs::LinkNew(from, back);
    }
    if (s.ok()) {
      s = fs::Unlink(from);
      // A retransmitted unlink may answer "not found" although it landed: gone either way.
      if (s.kind() == ErrorKind::kNotFound) s = Status::Ok();
    }
  } else {
    s = fs::RenameEntry(from, back);
  }
  if (s.ok()) {
    LogWarn("claimed something that is not a file; moved it back", {{"path", back}});
    return;
  }
  const std::string why = "claimed something that is not a file, and could not move it back to " +
                          back + ": " + s.ToString();
  LogError(why, {{"claim", claim.Path()}});
  d_.inst.errors.Add(FormatTimestamp(d_.clock.WallNow()), claim.RelPath(), why);
}

Status FileProcessor::SetRuns(ClaimPath& claim, int runs) {
  const ClaimPath next = claim.WithRuns(runs);
  // Held by another worker of this process already: the claim was queued twice (a walk of the
  // volume listed it just before that worker's own rename here), and the rename below would
  // find its target there and take it for a retry of its own.
  if (!d_.inflight.Add(next.Path())) {
    return Status(ErrorKind::kNotFound, "claim picked up by another worker of this replica");
  }
  Status s = d_.runs_rename ? d_.runs_rename(ProcessingPath(claim), ProcessingPath(next))
                            : fs::RenameEntry(ProcessingPath(claim), ProcessingPath(next));
  if (!s.ok()) {
    d_.inflight.Remove(next.Path());
    return s;
  }
  d_.inflight.Remove(claim.Path());
  claim = next;
  return Status::Ok();
}

Status FileProcessor::Attempt(const ClaimPath& claim, Existing existing,
                              const telemetry::SpanContext& parent, std::stop_token stop,
                              std::optional<fs::FileStat>& torn_at, bool* skipped, uint64_t* bytes,
                              bool* committed, std::optional<fs::FileStat>* source,
                              uint64_t* whole_reads) {
  // A name Azure would refuse is dead-lettered at once, the same way on Azurite, which takes it.
  if (Status s = CheckBlobName(claim.BlobName()); !s.ok()) return s;
  // The stage and upload spans overlap for block uploads: blocks are sent while later ones are
  // still being copied.
  telemetry::Span stage_span = d_.tracer.StartSpan("stage", &parent);
  Result<StagedFile> staged = OpenStaging(claim, torn_at);
  if (!staged.ok()) {
    stage_span.SetError(staged.status().ToString());
    return staged.status();
  }
  *bytes = staged->size;
  *source = staged->source;
  stage_span.SetAttribute("file.size", static_cast<int64_t>(staged->size));
  Status up;
  {
    telemetry::Span upload_span = d_.tracer.StartSpan("upload", &parent);
    upload_span.SetAttribute("blob.name", claim.BlobName());
    upload_span.SetAttribute("upload.mode", staged->block_size == 0 ? "put_blob" : "blocks");
    upload_span.SetAttribute("upload.checksum", PutBlobChecksumName(staged->crc_only));
    up = Transfer(claim, *staged, existing, skipped, stage_span, upload_span, stop);
    // Written to since the copy was checked (the upload can take minutes): what was committed
    // is not what the claim holds, and the completion rename below would leave the rest out
    // of storage. Torn: the next attempt replaces the blob once the file has settled.
    if (up.ok()) up = ClaimUnchanged(*staged);
    if (!up.ok()) upload_span.SetError(up.ToString());
  }
  *whole_reads += staged->whole_reads;
  if (!staged->path.empty()) ::unlink(staged->path.c_str());
  if (up.message() == kTornCopy) {
    // The next attempt must find the claim as the file server has it now, after its whole wait.
    if (auto now = fs::FStatFresh(staged->src.get()); now.ok()) torn_at = *now;
  }
  if (!up.ok()) return up;
  *committed = true;
  telemetry::Span span = d_.tracer.StartSpan("complete", &parent);
  Status done = Complete(claim);
  if (!done.ok()) span.SetError(done.ToString());
  return done;
}

bool FileProcessor::ClaimAgainIfWritten(const fs::FileStat& source, const ClaimPath& claim,
                                        std::stop_token stop) {
  // Our marker, as the file server has it: gone if another replica took the claim over.
  const std::string marker = ProcessingPath(claim.WithState(ClaimState::kDone));
  const ClaimPath again = claim.Renewed(claim.owner);
  const Duration base = FromSeconds(std::max(0.05, d_.config.azure_retry_base_s));
  const Duration cap = FromSeconds(d_.config.azure_retry_max_s);
  for (int tries = 1;; ++tries) {
    auto st = d_.marker_stat ? d_.marker_stat(marker) : fs::StatFresh(marker);
    if (!st.ok() && st.status().kind() == ErrorKind::kNotFound) return true;
    if (st.ok() && st->size == source.size && st->mtime_ns == source.mtime_ns) {
      if (uint64_t held_back = 0;
          !d_.inflight.NoteSettledMarker(claim.WithState(ClaimState::kDone).Path(),
                                         {st->ctime_ns, /*linked=*/st->nlink > 1, st->mtime_ns}) &&
          settled_cap_log_.Allow(std::chrono::steady_clock::now(), &held_back)) {
        LogWarn(
            "more completion markers kept than this process notes its look at (100,000): "
            "for the rest, a write after the upload whose producer then sets the file's times "
            "(cp -p, tar) is missed, as after a restart; a shorter APP_COMPLETED_RETENTION_S "
            "keeps fewer",
            {{"blob", claim.BlobName()}, {"not_logged_since_last", held_back}});
      }
      return true;
    }
    // Written to, or the file server could not say (EIO, ESTALE...): claimed again either way.
    // Left as a marker, a sweep would collect it with any write it holds; claimed again, an
    // unchanged file is found complete in storage and not sent again.
    const Status s = fs::RenameEntry(marker, ProcessingPath(again));
    if (s.ok()) {
      LogWarn(st.ok() ? "written to during its completion: claimed again, to be uploaded again"
                      : "could not tell whether it was written to during its completion: "
                        "claimed again, to be checked and uploaded again if need be",
              {{"blob", claim.BlobName()},
               {"claim", again.Path()},
               {"error", st.ok() ? std::string() : st.status().ToString()}});
      return true;
    }
    if (s.kind() == ErrorKind::kNotFound) return true;  // taken over meanwhile
    const std::string why =
        "written to during its completion, or could not be looked at, and "
        "could not be claimed again yet (its marker is kept): " +
        s.ToString();
    LogError(why, {{"blob", claim.BlobName()}, {"attempt", tries}});
    d_.inst.errors.Add(FormatTimestamp(d_.clock.WallNow()), claim.RelPath(), why);
    // Until the process ends the marker stays held, so no sweep of ours collects it, and other
    // replicas leave a live replica's markers alone.
    if (!d_.clock.SleepFor(ExponentialBackoff(tries, base, cap, FastRandom01()), stop)) {
      return false;
    }
  }
}

FileProcessor::DeadLettered FileProcessor::DeadLetter(const ClaimPath& claim, const Status& why,
                                                      int attempts) {
  const FailedPath f = FailedPathFor(claim);
  const std::string data = fs::Join(d_.config.failed_root, f.DataPath());
  const auto gone = [&] {  // not ours to dead-letter, nor to pick up again
    LogWarn(
        "claim vanished before its dead letter: another replica took it over, or it was removed",
        {{"blob", claim.BlobName()}, {"why", why.ToString()}});
    return DeadLettered::kGone;
  };
  // The dead letter's name is this claim's nonce, which a takeover keeps. A replica that took the
  // claim over while this one stalled past its lease may move it there too, and its move would
  // pass for ours below (an ENOENT with the target in place reads as a move that landed): the
  // file counted twice, and its reason replaced. So the claim is looked at first, under this
  // replica's name: gone, it was taken over. Only a takeover and its dead letter both landing
  // between this look and the move (a stall past the lease in between) still pass for ours.
  if (fs::StatFresh(ProcessingPath(claim)).status().kind() == ErrorKind::kNotFound) {
    return gone();
  }
  // A move whose outcome RenameEntry could not tell (its reply lost, and then a look that failed)
  // landed when the data is there now.
  if (Status s = fs::RenameEntry(ProcessingPath(claim), data);
      !s.ok() && !(s.kind() == ErrorKind::kTransient && fs::StatFresh(data).ok())) {
    if (s.kind() == ErrorKind::kNotFound) return gone();
    LogError("dead-lettering failed; the claim stays for recovery",
             {{"blob", claim.BlobName()}, {"why", why.ToString()}, {"error", s.ToString()}});
    d_.inst.errors.Add(
        FormatTimestamp(d_.clock.WallNow()), claim.RelPath(),
        "not dead-lettered yet: " + s.ToString() + "; to be, for: " + why.ToString());
    std::lock_guard lock(undelivered_mu_);
    if (undelivered_.size() < kMaxUndelivered) undelivered_[claim.Path()] = {why, attempts};
    return DeadLettered::kKept;
  }
  nlohmann::json reason = {{"blob", claim.BlobName()},
                           {"container", d_.config.azure_container},
                           {"session", claim.session},
                           {"relative_path", claim.RelPath()},
                           {"attempts", attempts},
                           {"error", why.ToString()},
                           {"replica", d_.config.replica_id},
                           {"time", FormatTimestamp(d_.clock.WallNow())}};
  // A passing error of the volume (an fsync's EIO, an ESTALE) must not leave the bytes without
  // their reason, which lives only here: tried again.
  const std::string reason_path = fs::Join(d_.config.failed_root, f.ReasonPath());
  const std::string text = DumpJson(reason, 2);
  if (Status w = fs::Tried([&] { return fs::AtomicWriteFile(reason_path, text); }); !w.ok()) {
    LogWarn("could not write the dead-letter reason", {{"blob", claim.BlobName()},
                                                       {"reason_file", reason_path},
                                                       {"reason", why.ToString()},
                                                       {"error", w.ToString()}});
  }
  d_.inst.files_failed.Add();
  LogError("file dead-lettered", {{"blob", claim.BlobName()},
                                  {"file", claim.RelPath()},
                                  {"attempts", attempts},
                                  {"error", why.ToString()}});
  return DeadLettered::kMoved;
}

void FileProcessor::Process(WorkItem item, std::stop_token stop) {
  // Every run in flight when the service ends is charged an interruption. One may be any
  // crash's, a kill's or a lost node's: such claims run side by side. A claim interrupted again
  // may be the one that ends the service: its first attempt runs alone, so a crash there is
  // charged to it, not to the healthy files beside it, which would otherwise reach
  // APP_MAX_FILE_ATTEMPTS with it. Not one that is only to be dead-lettered, nor for longer than
  // it waits for the runs inside (RunGate), nor past its first attempt or that limit again (a
  // multi-hour upload must not hold the intake): its retries, waits and completion go on beside
  // the others, which also lets FailsOnlyThis see them work.
  bool alone = item.kind == WorkItem::Kind::kClaim && item.claim.runs >= kRunAloneFrom &&
               item.claim.runs < d_.config.max_file_attempts;
  if (alone) {
    std::lock_guard lock(undelivered_mu_);
    alone = !undelivered_.contains(item.claim.Path());
  }
  const MonoTime arrived = d_.clock.Now();
  RunGate::Pass pass(run_gate_, alone, stop, d_.lone_wait_limit);
  if (!pass) {  // stopped (or closed) while waiting: a claim stays for recovery, no run recorded
    if (item.kind == WorkItem::Kind::kClaim) d_.inflight.Remove(item.claim.Path());
    return;
  }
  if (alone && !pass.alone()) {
    LogInfo(
        "running a claim interrupted before beside the others: the runs inside outlasted "
        "the wait",
        {{"blob", item.claim.BlobName()}, {"waited_ms", Ms(d_.clock.Now() - arrived)}});
  }
  telemetry::Span root = d_.tracer.StartSpan("file");
  ScopedLogTraceContext log_ctx(root.context().trace_id, root.context().span_id);
  const MonoTime started = d_.clock.Now();
  ClaimPath claim;
  if (item.kind == WorkItem::Kind::kFresh) {
    root.SetAttribute("session", item.session);
    root.SetAttribute("file.path", item.rel);
    Result<ClaimPath> c = [&] {
      telemetry::Span span = d_.tracer.StartSpan("claim", &root.context());
      auto r = Claim(item);
      if (!r.ok()) span.SetError(r.status().ToString());
      return r;
    }();
    if (d_.on_claim_settled) {
      const ErrorKind kind = c.ok() ? ErrorKind::kOk : c.status().kind();
      d_.on_claim_settled(item.session, item.rel,
                          !c.ok() && kind != ErrorKind::kNotFound && kind != ErrorKind::kConflict);
    }
    if (!c.ok()) {
      if (c.status().kind() == ErrorKind::kNotFound) {
        d_.inst.claim_conflicts.Add();
        LogInfo("claim lost", {{"session", item.session}, {"file", item.rel}});
      } else {
        if (uint64_t held_back = 0; claim_failure_log_.Allow(d_.clock.Now(), &held_back)) {
          LogWarn("claim failed; the file stays in incoming and is retried",
                  {{"session", item.session},
                   {"file", item.rel},
                   {"error", c.status().ToString()},
                   {"not_logged_since_last", held_back}});
        }
        // A file still being written is looked at again; anything else (a permission, an I/O
        // error) keeps the file from the pipeline until it is mended, so it shows.
        if (c.status().kind() != ErrorKind::kConflict) {
          d_.inst.attempt_failures.Add(1, {{"reason", "claim"}});
          // One slot for them all: a volume that refuses every claim would otherwise fill the
          // recent errors with one file after another.
          d_.inst.errors.Add(FormatTimestamp(d_.clock.WallNow()), item.rel,
                             "claim failed: " + c.status().ToString(),
                             std::string("claim failed: ") + ToString(c.status().kind()));
        }
      }
      root.SetError(c.status().ToString());
      return;
    }
    claim = std::move(*c);  // in flight since before its rename
  } else {
    claim = item.claim;
    root.SetAttribute("session", claim.session);
    root.SetAttribute("file.path", claim.RelPath());
    root.SetAttribute("recovered", true);
  }
  root.SetAttribute("blob.name", claim.BlobName());
  root.SetAttribute("replica", d_.config.replica_id);
  d_.inst.files_in_progress.Add(1);

  const Duration base = FromSeconds(std::max(0.05, d_.config.azure_retry_base_s));
  const Duration cap = FromSeconds(d_.config.azure_retry_max_s);
  int attempts = 0;  // failures that count against the file
  int waits = 0;     // environmental waits (storage unreachable, auth, torn copies)
  // The claim's stat after its last torn copy, and at first, for a fresh file, what the scanner
  // found stable: a file written to after that has to settle again before a copy counts.
  std::optional<fs::FileStat> torn_at;
  if (item.kind == WorkItem::Kind::kFresh) torn_at = item.observed;
  std::optional<Failing> unreachable;  // while storage keeps failing (or refusing) this file
  std::optional<Failing> unreadable;   // while the volume keeps failing to read its claim
  uint64_t whole_reads = 0;            // of its claim, by its attempts (FailsOnlyThis)
  // A claim picked up again may be dead-lettered (or gone) before it runs.
  // This run is on the claim's name: a fresh claim's rename records it, BeginRun another's.
  bool run_recorded = true;
  const bool run =
      item.kind != WorkItem::Kind::kClaim || BeginRun(claim, root, &attempts, &run_recorded);
  Existing existing = item.check_existing ? Existing::kSameBytes : Existing::kIgnore;
  bool handed_back = false;         // stopped: the run does not count against the file
  bool dead_letter_failed = false;  // the move to the failed root failed: the run is handed back
  // The blob is committed and checked: only the completion rename is left, and its failures
  // (the NFS server's) are waited out, neither uploading again nor counting against the file.
  bool committed = false;
  bool skipped = false;
  uint64_t bytes = 0;
  std::optional<fs::FileStat> source;  // the claim as the last attempt opened it
  // The marker this claim becomes is in flight too, until the look after the completion rename
  // (ClaimAgainIfWritten): a sweep must not collect it before that look has moved it.
  const std::string done_path = claim.WithState(ClaimState::kDone).Path();
  d_.inflight.HoldMarker(done_path);
  bool release_marker = true;  // false: its look could not settle it (ClaimAgainIfWritten)
  while (run) {
    Status s;
    if (committed) {
      telemetry::Span span = d_.tracer.StartSpan("complete", &root.context());
      s = Complete(claim);
      if (!s.ok()) span.SetError(s.ToString());
    } else {
      skipped = false;  // an earlier attempt's skip was undone by its torn copy
      s = Attempt(claim, existing, root.context(), stop, torn_at, &skipped, &bytes, &committed,
                  &source, &whole_reads);
      pass.Share();
    }
    if (s.ok()) {
      if (source) release_marker = ClaimAgainIfWritten(*source, claim, stop);
      const double secs = ToSeconds(d_.clock.Now() - started);
      if (skipped) {
        d_.inst.files_skipped.Add();
      } else {
        d_.inst.bytes_uploaded.Add(static_cast<double>(bytes));
        storage_.successes.fetch_add(1);
      }
      if (item.kind == WorkItem::Kind::kClaim) d_.inst.files_recovered.Add();
      d_.inst.files_processed.Add();
      d_.inst.upload_duration.Record(secs);
      d_.inst.file_size.Record(static_cast<double>(bytes));
      const double latency = ToSeconds(d_.clock.Now() - item.ready_at);
      if (item.ready_at != MonoTime{}) d_.inst.ready_to_commit.Record(latency);
      d_.inst.recent.Add(d_.clock.Now(), bytes, item.ready_at != MonoTime{} ? latency : secs);
      LogInfo(skipped ? "blob already complete" : "uploaded",
              {{"session", claim.session},
               {"file", claim.RelPath()},
               {"blob", claim.BlobName()},
               {"bytes", bytes},
               {"duration_ms", Ms(d_.clock.Now() - started)}});
      break;
    }
    root.AddEvent("attempt_failed", {{"error", s.ToString()}});
    if (s.kind() == ErrorKind::kCancelled || stop.stop_requested()) {
      handed_back = true;
      break;
    }
    if (s.kind() == ErrorKind::kNotFound) {
      // Gone only if a look says so: one that fails (EIO) is the volume's trouble, and the
      // claim, still this replica's, is waited out as such.
      const Result<fs::FileStat> here = fs::Stat(ProcessingPath(claim));
      if (here.status().kind() == ErrorKind::kNotFound) {
        LogWarn("claim vanished: another replica took it over, or it was removed",
                {{"blob", claim.BlobName()}});
        break;
      }
      if (!here.ok()) s = ClaimReadFailure(here.status());
    }
    if (s.message() == kNotAFile) {
      // A directory (or a FIFO) under the file's name: the producer replaced the file by it just
      // before the claim's rename, which attributes cached a moment too long let through. It
      // goes back where it was, for the scanner to walk (ReturnToIncoming). (One so claimed just
      // before a crash stays in .processing: the walks there see only files.)
      ReturnToIncoming(claim);
      break;
    }
    const bool torn = s.message() == kTornCopy;
    // The commit may have landed, its every answer lost: the next attempt looks first rather
    // than send the whole file again (a torn copy's blob is replaced anyway).
    if (!torn && existing == Existing::kIgnore) existing = Existing::kOwnCommit;
    // Storage unreachable, throttled past every retry, refusing our credentials, or its
    // container gone and not recreatable yet (BlobClient recreates it), staging full or
    // failing, or the volume failing to read the claim: not the file's fault, waited out.
    bool environmental = committed || s.kind() == ErrorKind::kUnavailable ||
                         s.kind() == ErrorKind::kBusy || s.kind() == ErrorKind::kAuth ||
                         s.kind() == ErrorKind::kStaging || s.kind() == ErrorKind::kVolume;
    // Unless storage, or the volume, fails only this file while it works for others. A refusal
    // (a role assignment conditioned on the blob's path, a SAS without read for the look at a
    // blob already there) counts once this file has been refused for unavailable_counts_after_s
    // and others' uploads went through between its refusals, however many files are refused
    // with it (a role refuses a whole prefix). A refusal that passes (a role assignment still
    // spreading across storage's front ends) ends first; credentials refused for everyone let
    // no upload through.
    if (s.kind() != ErrorKind::kUnavailable && s.kind() != ErrorKind::kAuth) {
      unreachable.reset();
    } else if (!committed &&
               FailsOnlyThis(unreachable, storage_, 0, s.kind() == ErrorKind::kAuth)) {
      environmental = false;
    }
    if (s.kind() != ErrorKind::kVolume) {
      unreadable.reset();
    } else if (FailsOnlyThis(unreadable, volume_, whole_reads)) {
      environmental = false;
    } else {
      d_.inst.volume.Failed(d_.clock.Now());  // the status's volume_failing
    }
    // Staging failures are counted where they happen, as staging_full or staging_failing.
    if (torn) {
      d_.inst.attempt_failures.Add(1, {{"reason", "torn_copy"}});
    } else if (s.kind() != ErrorKind::kStaging) {
      d_.inst.attempt_failures.Add(1, {{"reason", ToString(s.kind())}});
    }
    if (!torn)
      d_.inst.errors.Add(FormatTimestamp(d_.clock.WallNow()), claim.RelPath(), s.ToString());
    if (!torn && !environmental) {
      ++attempts;
      if (s.kind() == ErrorKind::kPermanent || attempts >= d_.config.max_file_attempts) {
        // Not moved (the failed root refuses it): the claim stays, and a sweep queues it again,
        // to be moved then, not uploaded again (undelivered_).
        // Its run ended with this process's judgement, not with the process: handed back, or
        // each pickup would count an interruption, and the file would at last be dead-lettered
        // as "interrupted", its reason lost.
        dead_letter_failed = DeadLetter(claim, s, attempts) == DeadLettered::kKept;
        root.SetError(s.ToString());
        break;
      }
    }
    const Duration delay =
        torn ? FromSeconds(std::max(d_.config.min_file_age_s, 0.1))
             : ExponentialBackoff(environmental ? ++waits : attempts, base, cap, FastRandom01());
    LogWarn(torn ? "file changed while staging; will retry" : "attempt failed; will retry",
            {{"blob", claim.BlobName()},
             {"attempt", attempts},
             {"error", s.ToString()},
             {"retry_in_ms", Ms(delay)}});
    if (!d_.clock.SleepFor(delay, stop)) {
      handed_back = true;
      break;
    }
  }
  const char* const left =
      handed_back ? "stopping; claim left for recovery" : "claim left to be dead-lettered again";
  const bool give_back = handed_back || dead_letter_failed;
  if (give_back && !run_recorded) {
    // Never recorded (BeginRun's rename failed): nothing to hand back, and taking one off would
    // forget a run that did end with the service.
    LogInfo(left, {{"blob", claim.BlobName()}});
  } else if (give_back) {
    // A shutdown is not the file's fault: hand the run back, so only runs that ended with the
    // process count. If the rename fails the run counts, which at worst dead-letters early.
    const std::string before = claim.Path();
    if (Status s = SetRuns(claim, claim.runs - 1); s.ok()) {
      LogInfo(left, {{"blob", claim.BlobName()}});
      std::lock_guard lock(undelivered_mu_);
      if (auto node = undelivered_.extract(before)) {
        node.key() = claim.Path();
        undelivered_.insert(std::move(node));
      }
    } else {
      LogWarn(std::string(left) + ", its run not handed back",
              {{"blob", claim.BlobName()}, {"error", s.ToString()}});
    }
  }
  d_.inst.files_in_progress.Add(-1);
  if (release_marker) d_.inflight.ReleaseMarker(done_path);
  d_.inflight.Remove(claim.Path());
}

bool FileProcessor::FailsOnlyThis(std::optional<Failing>& u, SharedUse& use, uint64_t own,
                                  bool refused) {
  const MonoTime now = d_.clock.Now();
  const uint64_t successes = use.successes.load() - own;
  const uint64_t failures = ++use.failures;
  if (!u) {
    u = Failing{successes, failures, now};
    return false;
  }
  // Others failed since this file last did. Not for refusals: those of others say nothing of
  // this file's (a role refuses a whole prefix), so they count from this file's first.
  if (!refused && failures > u->failures + 1) u->others_at = now;
  const bool only_this = successes > u->successes &&
                         now - u->others_at >= FromSeconds(d_.config.unavailable_counts_after_s);
  u->successes = successes;
  u->failures = failures;
  return only_this;
}

bool FileProcessor::BeginRun(ClaimPath& claim, telemetry::Span& root, int* attempts,
                             bool* recorded) {
  std::optional<Undelivered> decided;
  {
    std::lock_guard lock(undelivered_mu_);
    if (auto node = undelivered_.extract(claim.Path())) decided = std::move(node.mapped());
  }
  if (decided) {
    // Decided by an earlier run of this process; only its move to the failed root failed.
    // Failing again, it is kept again.
    (void)DeadLetter(claim, decided->why, decided->attempts);
    root.SetError(decided->why.ToString());
    return false;
  }
  // Every earlier run of this claim not handed back ended with its process: the service crashed,
  // was killed or ran out of memory while it held the file. Each counts as a failed attempt, so
  // a file that kills the service is dead-lettered instead of killing every replica in turn.
  const int interrupted = claim.runs;
  *attempts = interrupted;
  if (interrupted > 0) {
    const std::string why = "interrupted " + std::to_string(interrupted) +
                            (interrupted == 1 ? " time" : " times") +
                            ": a run of the service ended while it processed this file (a crash, "
                            "a kill, out of memory, or a stall long enough for a takeover)";
    d_.inst.attempt_failures.Add(1, {{"reason", "interrupted"}});
    d_.inst.errors.Add(FormatTimestamp(d_.clock.WallNow()), claim.RelPath(), why);
    root.AddEvent("interrupted_runs", {{"count", static_cast<int64_t>(interrupted)}});
    if (interrupted >= d_.config.max_file_attempts) {
      // Not moved: the claim stays, its interruptions counted again at its next pickup.
      (void)DeadLetter(claim, Status(ErrorKind::kPermanent, why), interrupted);
      root.SetError(why);
      return false;
    }
    LogWarn("picking up a claim whose earlier runs ended with the service",
            {{"blob", claim.BlobName()}, {"interrupted_runs", interrupted}});
  }
  // Recorded on the volume before the run begins, so a run this process does not survive counts.
  if (Status s = SetRuns(claim, claim.runs + 1); !s.ok()) {
    *recorded = false;
    if (s.kind() == ErrorKind::kNotFound) {
      LogWarn("claim vanished; another worker or replica took it over",
              {{"blob", claim.BlobName()}, {"error", s.ToString()}});
      return false;
    }
    LogWarn("could not record the run on the claim; processing it anyway",
            {{"blob", claim.BlobName()}, {"error", s.ToString()}});
  }
  return true;
}

std::vector<ClaimPath> FileProcessor::ReviveDeadLetters(std::vector<std::string>* errors,
                                                        size_t* unlisted) {
  std::vector<ClaimPath> revived;
  std::vector<std::string> stack = {""};
  while (!stack.empty()) {
    const std::string rel = stack.back();
    stack.pop_back();
    // What cannot be looked at is named in the answer: its dead letters stay where they are.
    // Not found: gone since the listing (moved by another replica's retry, or the operator).
    const auto unseen = [&](const Status& s) {
      if (s.kind() == ErrorKind::kNotFound) return;
      if (errors->size() < kMaxListedErrors) {
        errors->push_back(s.ToString());
      } else if (unlisted != nullptr) {
        ++*unlisted;
      }
    };
    auto entries = fs::ListDir(fs::Join(d_.config.failed_root, rel));
    if (!entries.ok()) {
      unseen(entries.status());
      continue;
    }
    for (const auto& e : *entries) {
      const std::string child = rel.empty() ? e.name : rel + "/" + e.name;
      const std::string full = fs::Join(d_.config.failed_root, child);
      auto st = fs::Stat(full);
      if (!st.ok()) {
        unseen(st.status());
        continue;
      }
      if (st->is_dir) {
        stack.push_back(child);
        continue;
      }
      auto f = ParseFailedPath(child);
      if (!f) continue;
      if (f->is_reason) {
        // A reason without its bytes: they were revived between their move here and the
        // reason's write (the write came last), or a crash came between a revival's move and
        // its unlink below. Nothing else ever removes it.
        if (fs::StatFresh(fs::Join(d_.config.failed_root, f->DataPath())).status().kind() ==
            ErrorKind::kNotFound) {
          ::unlink(full.c_str());
        }
        continue;
      }
      // No run of it has begun: picking it up makes the first (see ClaimPath::runs).
      ClaimPath c{f->date,    f->session,           f->reldir, f->base, d_.config.replica_id,
                  NewNonce(), ClaimState::kClaimed, 0};
      const std::string dst = ProcessingPath(c);
      if (Status s = fs::RenameEntry(full, dst); !s.ok()) {
        unseen(s);
        continue;
      }
      ::unlink(fs::Join(d_.config.failed_root, f->ReasonPath()).c_str());
      revived.push_back(std::move(c));
    }
  }
  return revived;
}

}  // namespace nbu::core
