// The watch session, persisted on the shared volume so a restarted or rescheduled replica resumes
// it, and every replica watches it.
//
// Replicas on other hosts start and stop sessions concurrently, and no lock spans hosts, so each
// change is a compare-and-swap on a generation number. Generation g of the state is the file
// <processing>/_session/<g>.json, and a file is never changed once published. A writer that read
// generation g writes its new state to a temp file of its own and links it to <g+1>.json: link()
// creates the name only if it is absent, atomically on the NFS server, so of two writers that read
// the same g one wins and the other gets kConflict, reads again and decides on the winner's state.
// Readers take the highest generation present: listed, or found by name just above the listed
// ones (a listing can be cached for a while, a failed lookup is not). Each publish removes the
// generations below the previous one, and the temp files of writers that crashed, so the
// directory holds two or three files and listing it stays cheap.
//
// The single file <processing>/_session.json of earlier versions is read as generation 0 while no
// numbered generation exists (an upgrade keeps its session), and removed with the old generations.
#pragma once

#include "util/fs.h"
#include "util/status.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace nbu::core {

struct SessionState {
  std::string name;
  std::string started_at;  // RFC 3339
  bool active = false;
  std::string stopped_at;
};

class SessionStore {
 public:
  // Lists the generation directory. fs::ListDir in production; a test passes a listing frozen at
  // an older state, as an NFS client's cached one can be, which a local filesystem never serves.
  using DirLister = std::function<Result<std::vector<fs::DirEntry>>(const std::string& dir)>;

  explicit SessionStore(const std::string& processing_root, DirLister list_dir = fs::ListDir);
  // The newest state; nullopt when no session was ever started; an unreadable file is an error.
  // `generation` (if given) is set to the generation read, also when its file is damaged, so that
  // a writer can replace it.
  Result<std::optional<SessionState>> Load(uint64_t* generation = nullptr) const;
  // Publishes `state` as generation `loaded` + 1, where `loaded` is the generation that the caller
  // decided on. kConflict: another writer published it first; Load again and decide anew.
  Status Save(const SessionState& state, uint64_t loaded) const;

 private:
  std::string GenerationPath(uint64_t generation) const;
  // The highest generation listed, or known to exist: 0 when there is none.
  Result<uint64_t> Newest() const;
  void RemoveOldGenerations(uint64_t newest) const;

  std::string root_;         // <processing>
  std::string legacy_path_;  // <processing>/_session.json
  std::string dir_;          // <processing>/_session
  DirLister list_dir_;
  // The highest generation this store saw published (listed, read, written, or lost a race to).
  // An NFS client's directory listing may lag for a few seconds; a store never reads an older one.
  mutable std::atomic<uint64_t> known_{0};
};

}  // namespace nbu::core
