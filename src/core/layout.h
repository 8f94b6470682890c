// The on-volume layout: every name the service creates is parsed, never guessed with ends_with.
//
//   <incoming>/<session>/<relpath>                         producer files (never renamed onto)
//   <processing>/<YYYYMMDD>/<session>/<reldir>/<base>~<owner>~<nonce>[~<runs>].claimed
//                                                         claimed by replica <owner>, in flight
//   <processing>/<YYYYMMDD>/<session>/<reldir>/<base>~<owner>~<nonce>[~<runs>].done
//                                                         blob committed; removed by GC
//   <processing>/_replicas/<owner>.lease                   heartbeat of each replica
//   <processing>/_session/<generation>.json                the watch session (session_store.h)
//   <failed>/<YYYYMMDD>/<session>/<reldir>/<base>~<nonce>.failed       dead-lettered bytes
//   <failed>/<YYYYMMDD>/<session>/<reldir>/<base>~<nonce>.failed.json  why
//   <staging>/<YYYYMMDD>/<session>/<reldir>/<base>~<nonce>             local copy being uploaded
//
// Producers never write below <processing> or <failed>, so every entry there carries exactly one
// suffix appended by the service; parsing from the right is unambiguous whatever the producer's
// name (`x.completed`, `x~a~b.claimed`...). The nonce makes each claim name unique, so no claim or
// completion rename can land on an existing name. The blob name is a pure function of the path:
// <YYYYMMDD>/<session>/<reldir>/<base>, each segment encoded where Azure would change or refuse it
// (blob_name.h).
//
// A name too long to carry the suffixes within the file system's 255-byte limit on one entry
// (a producer's name of up to 255 bytes is valid) is held one directory deeper: the entry is
// <base>/~<owner>~<nonce>[~<runs>].<state> (and <base>/~<nonce>.failed, <base>/~<nonce> in
// staging). An entry whose base part is empty takes its base from its directory; a producer's
// name is never empty, so this too parses one way only.
//
// <runs> counts the runs of a claim that were begun and not handed back: the one under way plus
// every earlier one that ended with its process (a crash, SIGKILL, an OOM kill, a lost node). It
// is absent while it is 1, as for every fresh claim. A run picked up again (start-up recovery, a
// takeover, an orphan) adds one by a rename before it begins; a worker that stops for a shutdown
// hands its run back (one less). So a claim found with runs = N was interrupted N times, and a
// file that kills the service every time it is processed is dead-lettered after
// APP_MAX_FILE_ATTEMPTS such runs instead of taking down every replica in turn.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace nbu::core {

enum class ClaimState { kClaimed, kDone };

// A parsed entry below <processing>, relative to it.
struct ClaimPath {
  std::string date;  // YYYYMMDD (UTC, at claim time)
  std::string session;
  std::string reldir;  // "" or "a/b"
  std::string base;    // the producer's file name
  std::string owner;   // replica id
  std::string nonce;   // 16 lower-case hex chars
  ClaimState state = ClaimState::kClaimed;
  int runs = 1;  // begun and not handed back (see above); 0 to kMaxClaimRuns
  // Held in a directory named after the base: parsed so, or once the name needed it (a With*
  // copy keeps it, so a claim does not move back out). InBaseDir() also holds it when needed.
  bool base_dir = false;

  bool InBaseDir() const;

  std::string RelPath() const;    // <reldir>/<base> (the producer's relative path)
  std::string BlobName() const;   // <date>/<session>/<reldir>/<base>, encoded (blob_name.h)
  std::string EntryName() const;  // [<base>]~<owner>~<nonce>[~<runs>].<state>
  // <date>/<session>/<reldir>/[<base>/]<entry>, relative to <processing>
  std::string Path() const;
  ClaimPath WithState(ClaimState s) const;
  ClaimPath WithOwner(std::string o) const;
  ClaimPath WithRuns(int r) const;
  // The same file as a new claim of `o`: claimed, a new nonce, no run yet (the same blob).
  ClaimPath Renewed(const std::string& o) const;
};

// The largest run count a claim name carries (APP_MAX_FILE_ATTEMPTS is at most 1000).
constexpr int kMaxClaimRuns = 9999;
// The longest entry name the volume takes (NAME_MAX of Linux file systems and of NFS).
constexpr size_t kMaxEntryName = 255;

// A parsed entry below <failed>, relative to it.
struct FailedPath {
  std::string date, session, reldir, base, nonce;
  bool is_reason = false;  // the .failed.json beside the bytes
  bool base_dir = false;   // parsed from <base>/~<nonce>.failed; InBaseDir() also when needed
  bool InBaseDir() const;
  std::string RelPath() const;
  std::string DataPath() const;    // relative to <failed>
  std::string ReasonPath() const;  // relative to <failed>
};

std::optional<ClaimPath> ParseClaimPath(std::string_view rel);
std::optional<FailedPath> ParseFailedPath(std::string_view rel);
FailedPath FailedPathFor(const ClaimPath& claim);
// <date>/<session>/<reldir>/<base>~<nonce> (or <base>/~<nonce>), relative to <staging>.
std::string StagingPath(const ClaimPath& claim);

bool IsValidSessionName(std::string_view name);  // 1-128 of [A-Za-z0-9._-], not "." or ".."
// A name a session may be started with: valid, and not ending in '.': storage drops a path
// segment's trailing dot, so the blobs' prefix would be another name (the blob name maps it to
// U+FF0E), not the one given. (A session file of an earlier version may hold one: still valid.)
bool IsNewSessionName(std::string_view name);
// 1-kMaxReplicaId of [A-Za-z0-9._-], not "." or "..".
bool IsValidReplicaId(std::string_view id);
// The longest replica id: a claim entry "~<owner>~<nonce>~<runs>.claimed" must fit in one entry.
constexpr size_t kMaxReplicaId = kMaxEntryName - (1 + 1 + 16 + 5 + 8);
bool IsDateDir(std::string_view name);  // 8 digits
bool IsNonce(std::string_view s);       // 16 lower-case hex
std::string NewNonce();
// Names the scanner skips by default: dot-files (rsync temps, .nfsXXXX silly renames) and empty
// names.
bool IsHiddenName(std::string_view name);
// An NFS client's silly rename of a file deleted while open: ".nfs" and hex digits, as Linux
// names them (".nfs" + 24), or with dots too (FreeBSD's ".nfs.0000abcd.0004"). Never uploaded:
// it goes when its last opener closes it.
bool IsNfsSillyName(std::string_view name);
// A file server's snapshot directory, listed in the directories it covers when made visible
// (NetApp's .snapshot, ZFS's .zfs, snapper's .snapshots): read-only copies, not the producer's.
bool IsSnapshotDirName(std::string_view name);

}  // namespace nbu::core
