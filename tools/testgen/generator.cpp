#include "testgen/generator.h"

#include "testgen/file_name.h"
#include "util/crypto.h"
#include "util/log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>

namespace nbu::testgen {
namespace {

// Writes all of `data`, retrying short writes and EINTR.
Status WriteAll(int fd, const std::string& data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoStatus("write " + path, errno);
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

uint64_t ChunkCount(const JobSpec& spec) {
  if (spec.size_bytes == 0) return 1;
  const uint64_t by_size = (spec.size_bytes + kMaxChunkBytes - 1) / kMaxChunkBytes;
  if (spec.write_mode == WriteMode::kRename) return by_size;
  const uint64_t paced = std::min(kInPlaceChunks, (spec.size_bytes + 4095) / 4096);
  return std::max(by_size, paced);
}

}  // namespace

const char* ToString(GeneratorState state) {
  switch (state) {
    case GeneratorState::kIdle: return "idle";
    case GeneratorState::kRunning: return "running";
    case GeneratorState::kCompleted: return "completed";
    case GeneratorState::kStopped: return "stopped";
    case GeneratorState::kFailed: return "failed";
  }
  return "idle";
}

Generator::Generator(std::string output_dir, Clock& clock)
    : output_dir_(std::move(output_dir)), clock_(clock) {}

Generator::~Generator() {
  std::lock_guard control(control_mu_);
  worker_.request_stop();
  if (worker_.joinable()) worker_.join();
}

Status Generator::Start(const JobSpec& spec) {
  std::lock_guard control(control_mu_);
  {
    std::lock_guard lock(mu_);
    if (status_.state == GeneratorState::kRunning) {
      return {ErrorKind::kConflict, "a generation job is already running"};
    }
  }
  if (worker_.joinable()) worker_.join();  // the previous job has finished; reap its thread
  const std::string dir = output_dir_ + "/" + spec.session_name;
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return ErrnoStatus("create " + dir, ec.value());
  {
    std::lock_guard lock(mu_);
    status_ = GeneratorStatus{GeneratorState::kRunning, spec, 0, 0, {}, {}};
  }
  LogInfo("generation started", {{"session", spec.session_name},
                                 {"interval_s", spec.interval_s},
                                 {"size_bytes", spec.size_bytes},
                                 {"count", spec.count},
                                 {"write_mode", ToString(spec.write_mode)}});
  worker_ = std::jthread([this, spec, dir](const std::stop_token& stop) { Run(stop, spec, dir); });
  return Status::Ok();
}

Status Generator::Stop() {
  std::lock_guard control(control_mu_);
  {
    std::lock_guard lock(mu_);
    if (status_.state != GeneratorState::kRunning) {
      return {ErrorKind::kConflict, "no generation job is running"};
    }
  }
  worker_.request_stop();
  worker_.join();
  return Status::Ok();
}

GeneratorStatus Generator::Snapshot() const {
  std::lock_guard lock(mu_);
  return status_;
}

void Generator::Run(const std::stop_token& stop, const JobSpec& spec, const std::string& dir) {
  for (uint64_t seq = 1; spec.count == 0 || seq <= spec.count; ++seq) {
    const MonoTime started = clock_.Now();
    if (Status s = WriteOne(stop, spec, dir, seq); !s.ok()) {
      LogError("generation failed", {{"session", spec.session_name}, {"error", s.ToString()}});
      return Finish(GeneratorState::kFailed, s.ToString());
    }
    if (spec.count != 0 && seq == spec.count) break;
    const Duration left = FromSeconds(spec.interval_s) - (clock_.Now() - started);
    if (stop.stop_requested() || (left > Duration::zero() && !clock_.SleepFor(left, stop))) {
      return Finish(GeneratorState::kStopped, {});
    }
  }
  Finish(GeneratorState::kCompleted, {});
}

Status Generator::WriteOne(const std::stop_token& stop, const JobSpec& spec, const std::string& dir,
                           uint64_t seq) {
  const std::string name =
      MakeFileName({clock_.WallNow(), seq, static_cast<uint32_t>(RandomU64())});
  const std::string final_path = dir + "/" + name;
  const bool rename_mode = spec.write_mode == WriteMode::kRename;
  std::string path = rename_mode ? dir + "/." + name + ".XXXXXX" : final_path;
  const int fd = rename_mode ? ::mkstemp(path.data())
                             : ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus("create " + path, errno);
  Status s = WriteChunks(stop, fd, name, spec);
  if (s.ok() && rename_mode && ::fchmod(fd, 0644) != 0) s = ErrnoStatus("chmod " + path, errno);
  if (s.ok() && rename_mode && ::fsync(fd) != 0) s = ErrnoStatus("fsync " + path, errno);
  if (::close(fd) != 0 && s.ok()) s = ErrnoStatus("close " + path, errno);
  if (s.ok() && rename_mode && ::rename(path.c_str(), final_path.c_str()) != 0) {
    s = ErrnoStatus("rename " + path, errno);
  }
  if (!s.ok()) {
    ::unlink(path.c_str());  // never leave a partial file behind under any name
    return s;
  }
  LogInfo("file written", {{"session", spec.session_name},
                           {"file", name},
                           {"size", spec.size_bytes},
                           {"write_mode", ToString(spec.write_mode)}});
  std::lock_guard lock(mu_);
  ++status_.files_written;
  status_.last_file = spec.session_name + "/" + name;
  return Status::Ok();
}

Status Generator::WriteChunks(const std::stop_token& stop, int fd, const std::string& name,
                              const JobSpec& spec) {
  const uint64_t chunks = ChunkCount(spec);
  const bool paced = spec.write_mode == WriteMode::kInPlace && chunks > 1;
  const Duration pause =
      FromSeconds(std::min(spec.interval_s / 2 / static_cast<double>(chunks), kMaxChunkPauseS));
  ContentStream content(name);
  std::string buf;
  for (uint64_t i = 0; i < chunks; ++i) {
    // Spread the size evenly: chunk i ends at size * (i+1) / chunks.
    const uint64_t begin = spec.size_bytes * i / chunks;
    const uint64_t end = spec.size_bytes * (i + 1) / chunks;
    buf.resize(static_cast<size_t>(end - begin));
    content.Next(buf);
    if (Status s = WriteAll(fd, buf, name); !s.ok()) return s;
    {
      std::lock_guard lock(mu_);
      status_.bytes_written += buf.size();
    }
    // Once stopping, finish the file at full speed: a stop never leaves a truncated file.
    if (paced && i + 1 < chunks && !stop.stop_requested()) clock_.SleepFor(pause, stop);
  }
  return Status::Ok();
}

void Generator::Finish(GeneratorState state, std::string error) {
  std::lock_guard lock(mu_);
  status_.state = state;
  status_.error = std::move(error);
  LogInfo("generation finished", {{"session", status_.spec.session_name},
                                  {"state", ToString(state)},
                                  {"files_written", status_.files_written},
                                  {"bytes_written", status_.bytes_written}});
}

}  // namespace nbu::testgen
