// End-to-end test support: the uploader binary as a child process with its own directories,
// its API over HTTP, and a blob client on the same Azurite to check what arrived.
#pragma once

#include "azure/blob_client.h"
#include "support/azurite.h"
#include "support/azurite_client.h"
#include "support/process.h"

#include <nlohmann/json.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace nbu::test {

struct ApiResponse {
  int status = 0;
  nlohmann::json body;
  bool closed = false;  // Raw only: the server closed the connection after answering
  std::string head;     // Raw only: the status line and headers, lines ending in CRLF
};

// A connection string for the Azurite account at 127.0.0.1:`port` (Azurite's, or a proxy's).
std::string ConnectionStringVia(int port);
// Where the blob of <session>/<rel> can be: under the UTC date its claim was made, which is
// today's or, after a midnight since, yesterday's (never tomorrow's: the claim came first).
std::vector<std::string> BlobNames(const std::string& session, const std::string& rel);
// The content of the blob of <session>/<rel>, under whichever of those names it is; nothing
// when there is none.
std::optional<std::string> GetBlobOf(azure::BlobClient& blobs, const std::string& session,
                                     const std::string& rel);
// The container's blobs as storage lists them, each as <session>/<rel> (its date taken off),
// sorted, without the start-up probes' (.nbu-probe/...); nullopt if the listing failed. Unlike
// a read by name, which goes through the same encoding as the upload, this shows a name that
// storage took otherwise, a blob of a file the service should have ignored, and one sent twice.
std::optional<std::vector<std::string>> ListedFiles(azure::BlobClient& blobs);
// What ListedFiles should find when `files` (by <rel>) were all uploaded to `session`.
std::vector<std::string> FilesOf(const std::string& session,
                                 const std::map<std::string, std::string>& files);

// Directories shared by every replica of one test (the "NFS volume").
struct Volume {
  TempDir dir;
  std::string incoming() const { return dir.path() + "/nfs/incoming"; }
  std::string processing() const { return dir.path() + "/nfs/.processing"; }
  std::string failed() const { return dir.path() + "/nfs/.failed"; }
  // Claims and completion markers below the processing root (not the _session/ and
  // _replicas/ control files).
  size_t ClaimEntries() const;
  // Regular files below `root`, as relative paths.
  static std::vector<std::string> Files(const std::string& root);
};

class UploaderProcess {
 public:
  // Starts the binary for replica `replica` on `volume` with fast test timings; `extra` entries
  // override (empty value = unset). Its log is <volume>/uploader-<replica>.log (a replica's
  // restart appends to it). It is checked at the end of the test (ChildProcess::CheckAtEnd):
  // stopped by SIGTERM, exit status 0, no sanitizer's report in its part of the log.
  UploaderProcess(const Azurite& azurite, const Volume& volume, const std::string& container,
                  const std::string& replica, std::map<std::string, std::string> extra = {});
  ApiResponse Call(const std::string& method, const std::string& path,
                   const std::string& body = "");
  // A POST without a body as curl -X POST sends it: no Content-Length at all.
  ApiResponse BodilessPost(const std::string& path);
  // Sends `request` as it is (request line, headers, any body), leaves the connection open for
  // writing, and reads the answer until the server closes it (status 0: none within 10 s).
  ApiResponse Raw(const std::string& request);
  bool WaitReady(std::chrono::milliseconds timeout = std::chrono::seconds(60));
  nlohmann::json Status() { return Call("GET", "/v1/status").body; }
  // An unlabelled series' value as /metrics shows it ("" when absent).
  std::string Metric(const std::string& name);
  ChildProcess& process() { return *proc_; }
  int port() const { return port_; }
  std::string staging() const { return staging_; }

 private:
  int port_;
  std::string staging_;
  std::unique_ptr<ChildProcess> proc_;
};

}  // namespace nbu::test
