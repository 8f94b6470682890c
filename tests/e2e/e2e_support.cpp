#include "e2e_support.h"

#include "core/file_processor.h"

#include <httplib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>

namespace nbu::test {

std::string ConnectionStringVia(int port) {
  return std::string("DefaultEndpointsProtocol=http;AccountName=") + kAzuriteAccount +
         ";AccountKey=" + kAzuriteKey + ";BlobEndpoint=http://127.0.0.1:" + std::to_string(port) +
         "/" + kAzuriteAccount + ";";
}

std::vector<std::string> BlobNames(const std::string& session, const std::string& rel) {
  const auto now = std::chrono::system_clock::now();
  std::vector<std::string> names;
  for (const auto t : {now, now - std::chrono::hours(24)}) {
    names.push_back(core::UtcDate(t) + "/" + session + "/" + rel);
  }
  return names;
}

std::optional<std::string> GetBlobOf(azure::BlobClient& blobs, const std::string& session,
                                     const std::string& rel) {
  for (const auto& name : BlobNames(session, rel)) {
    if (auto got = blobs.GetBlob(name); got.ok()) return *got;
  }
  return std::nullopt;
}

std::optional<std::vector<std::string>> ListedFiles(azure::BlobClient& blobs) {
  auto listed = blobs.ListBlobNames("");
  if (!listed.ok()) return std::nullopt;
  std::vector<std::string> out;
  for (const std::string& name : *listed) {
    if (name.starts_with(".nbu-probe/")) continue;
    const size_t slash = name.find('/');
    out.push_back(slash == std::string::npos ? name : name.substr(slash + 1));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> FilesOf(const std::string& session,
                                 const std::map<std::string, std::string>& files) {
  std::vector<std::string> out;
  for (const auto& entry : files) out.push_back(session + "/" + entry.first);
  return out;  // sorted: the map's order
}

std::vector<std::string> Volume::Files(const std::string& root) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    // Entries come and go while a replica runs (completion markers are pruned): the type and
    // the relative path are read without touching the file system again, so one that vanished
    // meanwhile is listed or skipped, never an exception.
    std::error_code type_ec;
    if (it->is_regular_file(type_ec)) {
      out.push_back(it->path().lexically_relative(root).string());
    }
  }
  return out;
}

size_t Volume::ClaimEntries() const {
  size_t n = 0;
  for (const auto& f : Files(processing())) n += f.rfind('_', 0) == 0 ? 0U : 1U;
  return n;
}

UploaderProcess::UploaderProcess(const Azurite& azurite, const Volume& volume,
                                 const std::string& container, const std::string& replica,
                                 std::map<std::string, std::string> extra)
    : port_(FreeLoopbackPort()), staging_(volume.dir.path() + "/staging-" + replica) {
  std::map<std::string, std::string> env = {
      {"APP_ENV_FILE", "/dev/null"},  // no .env of the checkout
      {"APP_AZURE_CONNECTION_STRING", azurite.ConnectionString()},
      {"APP_AZURE_CONTAINER", container},
      {"APP_NFS_INCOMING_DIR", volume.incoming()},
      {"APP_NFS_PROCESSING_ROOT", volume.processing()},
      {"APP_NFS_FAILED_ROOT", volume.failed()},
      {"APP_LOCAL_STAGING_ROOT", staging_},
      {"APP_POLL_INTERVAL_S", "0.2"},
      {"APP_MIN_FILE_AGE_S", "0.5"},
      {"APP_GC_INTERVAL_S", "0.5"},
      {"APP_HTTP_HOST", "127.0.0.1"},
      {"APP_HTTP_PORT", std::to_string(port_)},
      {"APP_REPLICA_ID", replica},
      {"APP_AZURE_RETRY_BASE_S", "0.05"},
      {"APP_SHUTDOWN_GRACE_S", "5"},
      {"OTEL_EXPORTER_OTLP_ENDPOINT", ""},
  };
  for (auto& [k, v] : extra) env[k] = v;
  const std::string log = volume.dir.path() + "/uploader-" + replica + ".log";
  proc_ = std::make_unique<ChildProcess>(std::vector<std::string>{BinaryPath("nfs-blob-uploader")},
                                         env, log);
  // At the end of the test it must stop on SIGTERM within its shutdown grace plus the up to 3 s
  // its workers take after it and the sanitizers' exit (LeakSanitizer's scan): the default
  // grace (25 s) when the test unsets it, and that too for a value the service refuses (it
  // exits at once then).
  double grace_s = 25;
  if (const auto set = env.find("APP_SHUTDOWN_GRACE_S"); set != env.end() && !set->second.empty()) {
    char* end = nullptr;
    const double parsed = std::strtod(set->second.c_str(), &end);
    if (end != set->second.c_str() && *end == '\0' && parsed >= 0 && parsed <= 3600) {
      grace_s = parsed;
    }
  }
  proc_->CheckAtEnd(std::chrono::milliseconds(static_cast<long>(grace_s * 1000)) +
                    std::chrono::seconds(10));
}

ApiResponse UploaderProcess::Call(const std::string& method, const std::string& path,
                                  const std::string& body) {
  httplib::Client cli("127.0.0.1", port_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(10);
  httplib::Result r = method == "GET"    ? cli.Get(path.c_str())
                      : method == "POST" ? cli.Post(path.c_str(), body, "application/json")
                      : method == "PUT"  ? cli.Put(path.c_str(), body, "application/json")
                                         : cli.Delete(path.c_str());
  ApiResponse out;
  if (!r) return out;
  out.status = r->status;
  out.body = nlohmann::json::parse(r->body, nullptr, false);
  return out;
}

std::string UploaderProcess::Metric(const std::string& name) {
  httplib::Client cli("127.0.0.1", port_);
  cli.set_connection_timeout(2);
  cli.set_read_timeout(10);
  const httplib::Result r = cli.Get("/metrics");
  if (!r) return "";
  const std::string line = "\n" + name + " ";
  const size_t at = r->body.find(line);
  if (at == std::string::npos) return "";
  const size_t from = at + line.size();
  return r->body.substr(from, r->body.find('\n', from) - from);
}

ApiResponse UploaderProcess::BodilessPost(const std::string& path) {
  // No Content-Length, no Transfer-Encoding, and the connection stays open for writing (as curl
  // -X POST leaves it): the request has no body.
  return Raw("POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
}

ApiResponse UploaderProcess::Raw(const std::string& request) {
  ApiResponse out;
  const int fd = ConnectLoopback(port_);
  if (fd < 0) return out;
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string got;
  if (SendAll(fd, request)) {
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) got.append(buf, static_cast<size_t>(n));
    out.closed = n == 0;
  }
  ::close(fd);
  const size_t sp = got.find(' ');
  const size_t body = got.find("\r\n\r\n");
  if (sp == std::string::npos || body == std::string::npos) return out;
  out.status = std::atoi(got.c_str() + sp + 1);
  out.head = got.substr(0, body + 2);
  out.body = nlohmann::json::parse(got.substr(body + 4), nullptr, false);
  return out;
}

bool UploaderProcess::WaitReady(std::chrono::milliseconds timeout) {
  // Its own log says so too: a 200 alone could come from another test process's uploader on
  // the port, this one having failed to bind it. Only this process's lines count: a restarted
  // replica's log holds its predecessor's "ready".
  const auto ready = [&] {
    return Call("GET", "/readyz").status == 200 &&
           proc_->ReadLog().find(R"("message":"ready")", proc_->log_start()) != std::string::npos;
  };
  return WaitFor([&] { return ready() || !proc_->Running(); }, timeout) && proc_->Running();
}

}  // namespace nbu::test
