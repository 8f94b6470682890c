#include "support/azurite.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <stdexcept>

namespace nbu::test {
namespace {

bool PortAcceptsConnections(int port) {
  const int s = ConnectLoopback(port);
  if (s >= 0) ::close(s);
  return s >= 0;
}

}  // namespace

Azurite::Azurite(AzuriteOptions options) : options_(std::move(options)) {
  port_ = options_.port != 0 ? options_.port : FreeLoopbackPort();
  Start();
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
  proc_ = std::make_unique<ChildProcess>(argv, std::map<std::string, std::string>{},
                                         dir_.path() + "/azurite.log");
  if (!WaitFor([&] { return PortAcceptsConnections(port_) || !proc_->Running(); },
               std::chrono::seconds(60)) ||
      !proc_->Running()) {
    throw std::runtime_error("Azurite did not start: " + proc_->ReadLog());
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
