// The generator engine: one job at a time on its own thread, writing files into
// <output_dir>/<session>/ at the requested pace.
#pragma once

#include "testgen/job.h"
#include "util/clock.h"
#include "util/status.h"

#include <cstdint>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>

namespace nbu::testgen {

enum class GeneratorState {
  kIdle,       // no job has run yet
  kRunning,    // a job is writing files
  kCompleted,  // the last job wrote its `count` files
  kStopped,    // the last job was stopped by Stop() before reaching its count
  kFailed,     // the last job hit an I/O error (see `error`)
};

const char* ToString(GeneratorState state);

struct GeneratorStatus {
  GeneratorState state = GeneratorState::kIdle;
  JobSpec spec;  // the current or last job (defaults when idle)
  uint64_t files_written = 0;
  uint64_t bytes_written = 0;  // including the file being written
  std::string last_file;       // relative path of the last completed file
  std::string error;           // when kFailed
};

// In-place files are written in this many chunks (fewer for small files), spread over half the
// interval: an instrument that appends as it acquires, so the uploader's stability check sees
// a growing file. At most kMaxChunkPause between two chunks: a longer pause would let an
// uploader whose APP_MIN_FILE_AGE_S is shorter take the partial file for a finished one, and the
// chunks after it would miss the blob.
inline constexpr uint64_t kInPlaceChunks = 8;
inline constexpr double kMaxChunkPauseS = 1.0;
inline constexpr uint64_t kMaxChunkBytes = 1 << 20;

// Thread-safe. Every file that reaches its final name is complete: stopping finishes the file in
// progress without pacing, and rename-mode temp files are removed on error.
class Generator {
 public:
  Generator(std::string output_dir, Clock& clock);
  ~Generator();  // stops and joins the job
  Generator(const Generator&) = delete;
  Generator& operator=(const Generator&) = delete;

  // Starts `spec`; kConflict when a job is running; a filesystem error when the session
  // directory cannot be created.
  Status Start(const JobSpec& spec);
  // Stops the running job and waits for it to finish its current file; kConflict when none runs.
  Status Stop();
  GeneratorStatus Snapshot() const;

 private:
  void Run(const std::stop_token& stop, const JobSpec& spec, const std::string& dir);
  Status WriteOne(const std::stop_token& stop, const JobSpec& spec, const std::string& dir,
                  uint64_t seq);
  Status WriteChunks(const std::stop_token& stop, int fd, const std::string& name,
                     const JobSpec& spec);
  void Finish(GeneratorState state, std::string error);

  const std::string output_dir_;
  Clock& clock_;
  std::mutex control_mu_;  // serialises Start and Stop; never taken by the worker
  std::jthread worker_;    // guarded by control_mu_
  mutable std::mutex mu_;
  GeneratorStatus status_;  // guarded by mu_
};

}  // namespace nbu::testgen
