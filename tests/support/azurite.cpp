#include "support/azurite.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <stdexcept>
#include <string_view>

namespace nbu::test {
namespace {

// What Azurite prints once its listener is bound, --silent or not. A port that accepts
// connections is not enough: another test process's Azurite may hold it, this one having
// exited with EADDRINUSE.
constexpr std::string_view kListening = "successfully listens on";

}  // namespace

Azurite::Azurite(AzuriteOptions options) : options_(std::move(options)) {
  // A port picked here may be taken by another test process between the pick and Azurite's
  // bind: another one then, a few times.
  for (int attempt = 1;; ++attempt) {
    port_ = options_.port != 0 ? options_.port : FreeLoopbackPort();
    try {
      Start();
      return;
    } catch (const std::runtime_error& e) {
      if (options_.port != 0 || attempt == 3 ||
          std::string_view(e.what()).find("EADDRINUSE") == std::string_view::npos) {
        throw;
      }
    }
  }
}

Azurite::~Azurite() { Stop(); }

void Azurite::Start() {
  std::vector<std::string> argv = {SourceDir() + "/node_modules/.bin/azurite-blob",
                                   "--blobHost",
                                   "127.0.0.1",
                                   "--blobPort",
                                   std::to_string(port_),
                                   "--skipApiVersionCheck",
                                   "--disableTelemetry",
                                   "--silent"};
  if (options_.in_memory) {
    argv.emplace_back("--inMemoryPersistence");
  } else {
    argv.emplace_back("--location");
    argv.push_back(dir_.path() + "/ws");
  }
  for (const auto& a : options_.extra_args) argv.push_back(a);
  // azurite-blob is a node script: run it with node so a missing exec bit does not matter.
  argv.insert(argv.begin(), "/usr/bin/env");
  argv.insert(argv.begin() + 1, "node");
  const std::string log = dir_.path() + "/azurite.log";
  const size_t earlier = std::filesystem::exists(log) ? ReadFile(log).size() : 0;  // a restart's
  proc_ = std::make_unique<ChildProcess>(argv, std::map<std::string, std::string>{}, log);
  const auto this_run = [&] { return proc_->ReadLog().substr(earlier); };
  if (!WaitFor(
          [&] { return this_run().find(kListening) != std::string::npos || !proc_->Running(); },
          std::chrono::seconds(60)) ||
      !proc_->Running()) {
    const std::string why = this_run();
    Stop();
    throw std::runtime_error("Azurite did not start: " + why);
  }
}

void Azurite::Stop() {
  if (proc_) {
    proc_->Signal(SIGKILL);
    proc_->Wait(std::chrono::seconds(10));
    proc_.reset();
  }
}

std::string Azurite::BlobEndpoint() const {
  return options_.scheme + "://127.0.0.1:" + std::to_string(port_) + "/" + kAzuriteAccount;
}

std::string Azurite::ConnectionString() const {
  return "DefaultEndpointsProtocol=" + options_.scheme + ";AccountName=" + kAzuriteAccount +
         ";AccountKey=" + kAzuriteKey + ";BlobEndpoint=" + BlobEndpoint() + ";";
}

Azurite& SharedAzurite() {
  static Azurite azurite;
  return azurite;
}

std::string FreshContainer(const std::string& name) {
  static std::atomic<int> n{0};
  return name + "-" + std::to_string(++n);
}

}  // namespace nbu::test
