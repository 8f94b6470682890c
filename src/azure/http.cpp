// libcurl transport: a pool of easy handles (each keeps its keep-alive connections) shared by all
// threads; bodies come from memory or from a file range read with pread, rewindable by curl.
#include "azure/http.h"

#include "azure/url.h"
#include "util/text.h"

#include <curl/curl.h>
#include <openssl/err.h>
#include <openssl/x509_vfy.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <mutex>

namespace nbu::azure {

struct TransferProgress {
  const std::stop_token* stop = nullptr;  // null: none can be requested
  curl_off_t sent = 0;                    // the transfer's thread only, as received
  curl_off_t received = 0;
  // Steady-clock ns of its start, or of its last byte moved (a response header counts).
  std::atomic<int64_t> moved_at{0};
  std::atomic<int64_t>* given_up_silent = nullptr;  // HttpTransport's, ended by an answer
};

namespace {

// Source of the request body; `pos` is relative to the start of the body.
struct UploadState {
  const HttpRequest* req = nullptr;
  RateLimiter* limit = nullptr;  // HttpTransportOptions::send_limit
  uint64_t pos = 0;
  int read_errno = 0;
  bool read_short = false;  // the file ended before the body did
};

size_t ReadBody(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* st = static_cast<UploadState*>(userdata);
  const uint64_t total = st->req->BodySize();
  uint64_t want = std::min<uint64_t>(size * nitems, total - std::min(st->pos, total));
  if (want == 0) return 0;
  if (st->limit != nullptr) {
    // In small pieces, so that every request's turn comes often (well within the stall limit)
    // while many share the rate. A stop ends the wait: curl reports the transfer aborted.
    want = std::min<uint64_t>(want, 16 << 10);
    if (!st->limit->Acquire(want, st->req->stop)) return CURL_READFUNC_ABORT;
  }
  if (st->req->body_fd < 0) {
    std::memcpy(buffer, st->req->MemoryBody().data() + st->pos, want);
    st->pos += want;
    return want;
  }
  for (;;) {
    const ssize_t n =
        ::pread(st->req->body_fd, buffer, want, static_cast<off_t>(st->req->body_offset + st->pos));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // error, or the file shrank under us: the request cannot be completed
      st->read_errno = n < 0 ? errno : 0;
      st->read_short = n == 0;
      return CURL_READFUNC_ABORT;
    }
    st->pos += static_cast<uint64_t>(n);
    return static_cast<size_t>(n);
  }
}

int SeekBody(void* userdata, curl_off_t offset, int origin) {
  auto* st = static_cast<UploadState*>(userdata);
  if (origin != SEEK_SET || offset < 0 || static_cast<uint64_t>(offset) > st->req->BodySize()) {
    return CURL_SEEKFUNC_CANTSEEK;
  }
  st->pos = static_cast<uint64_t>(offset);
  return CURL_SEEKFUNC_OK;
}

int64_t SteadyNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A byte moved; `answered`: storage sent it. Only that ends a given-up silence: a retry's body
// goes into the kernel's send buffer even with nothing at the other end (a black hole).
void Moved(TransferProgress* t, bool answered) {
  t->moved_at.store(SteadyNs(), std::memory_order_relaxed);
  if (answered && t->given_up_silent->load(std::memory_order_relaxed) != 0) {  // rarely
    t->given_up_silent->store(0, std::memory_order_relaxed);
  }
}

// Called by curl while a transfer runs (about once a second when nothing moves): notes when
// bytes last moved, and aborts the transfer once its stop is requested.
int OnProgress(void* userdata, curl_off_t, curl_off_t received, curl_off_t, curl_off_t sent) {
  auto* t = static_cast<TransferProgress*>(userdata);
  if (sent != t->sent || received != t->received) {
    const bool answered = received != t->received;
    t->sent = sent;
    t->received = received;
    Moved(t, answered);
  }
  return t->stop != nullptr && t->stop->stop_requested() ? 1 : 0;
}

struct ResponseState {
  HttpResponse* resp = nullptr;
  size_t max_body = 0;
  bool too_large = false;
  TransferProgress* progress = nullptr;
};

size_t WriteBody(char* ptr, size_t size, size_t nmemb, void* userdata) {
  auto* st = static_cast<ResponseState*>(userdata);
  const size_t n = size * nmemb;
  if (st->resp->body.size() + n > st->max_body) {
    st->too_large = true;
    return 0;  // aborts the transfer with CURLE_WRITE_ERROR
  }
  st->resp->body.append(ptr, n);
  return n;
}

size_t WriteHeader(char* buffer, size_t size, size_t nitems, void* userdata) {
  auto* st = static_cast<ResponseState*>(userdata);
  Moved(st->progress, true);  // curl's progress counts no header bytes
  const size_t n = size * nitems;
  std::string_view line(buffer, n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  if (line.substr(0, 5) == "HTTP/") {
    st->resp->headers.clear();  // a new header block (e.g. after an interim 100 response)
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  std::string name = LowerAscii(line.substr(0, colon));
  auto [it, inserted] = st->resp->headers.emplace(name, std::string(value));
  if (!inserted) it->second.append(",").append(value);
  return n;
}

// Error kinds for curl failures: configuration mistakes will not heal by retrying.
ErrorKind KindOf(CURLcode code) {
  switch (code) {
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_NOT_BUILT_IN: return ErrorKind::kPermanent;
    case CURLE_ABORTED_BY_CALLBACK:
      return ErrorKind::kCancelled;  // OnProgress
    // Everything else is the network or the server: a refused or black-holed connection (a
    // connect timeout is CURLE_OPERATION_TIMEDOUT), resets, a server that never answers, TLS
    // trouble. An outage, not the fault of the request or the file; a body that cannot be read
    // is reported apart (ReadBody).
    default: return ErrorKind::kUnavailable;
  }
}

std::once_flag g_curl_init_once;

}  // namespace

Status CheckCaBundle(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0) return ErrnoStatus("cannot read " + path, errno);
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return ErrnoStatus("cannot read " + path, errno);
  if (!S_ISREG(st.st_mode)) {
    return Status(ErrorKind::kPermanent,
                  path + " is not a file: give a file of PEM certificates (a bundle)");
  }
  X509_STORE* store = X509_STORE_new();
  const bool loads = store != nullptr && X509_STORE_load_file(store, path.c_str()) == 1;
  X509_STORE_free(store);
  ERR_clear_error();
  if (!loads) {
    return Status(ErrorKind::kPermanent,
                  path +
                      " holds no PEM certificate (empty, DER, or not a certificate): every "
                      "request would fail on it");
  }
  return Status::Ok();
}

void HttpRequest::SetHeader(const std::string& name, const std::string& value) {
  std::erase_if(headers, [&](const auto& h) { return EqualsIgnoreCaseAscii(h.first, name); });
  headers.emplace_back(name, value);
}

const std::string* HttpRequest::FindHeader(const std::string& name) const {
  for (const auto& h : headers) {
    if (EqualsIgnoreCaseAscii(h.first, name)) return &h.second;
  }
  return nullptr;
}

const std::string* HttpResponse::Header(const std::string& lower_name) const {
  const auto it = headers.find(lower_name);
  return it == headers.end() ? nullptr : &it->second;
}

void GlobalHttpInit() {
  std::call_once(g_curl_init_once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Idle easy handles; a handle keeps its connection cache across curl_easy_reset.
struct HttpTransport::Pool {
  std::mutex mu;
  std::vector<CURL*> idle;  // guarded by mu

  ~Pool() {
    for (CURL* h : idle) curl_easy_cleanup(h);
  }
  CURL* Take() {
    {
      std::lock_guard lock(mu);
      if (!idle.empty()) {
        CURL* h = idle.back();
        idle.pop_back();
        return h;
      }
    }
    return curl_easy_init();
  }
  void Give(CURL* h, size_t max_idle) {
    {
      std::lock_guard lock(mu);
      if (idle.size() < max_idle) {
        idle.push_back(h);
        return;
      }
    }
    curl_easy_cleanup(h);
  }
};

HttpTransport::HttpTransport(HttpTransportOptions options)
    : options_(std::move(options)), pool_(std::make_unique<Pool>()) {
  GlobalHttpInit();
}

HttpTransport::~HttpTransport() = default;

std::chrono::nanoseconds HttpTransport::LongestSilence() const {
  // Under the lock that Send holds while it notes a give-up and drops the request: either is
  // seen, never neither.
  std::lock_guard lock(transfers_mu_);
  const int64_t now = SteadyNs();
  int64_t longest = 0;
  // A silent request given up: until storage sends a byte, for at most a stall limit after (with
  // no request since, nothing is known).
  if (const int64_t from = given_up_silent_.load(std::memory_order_relaxed);
      from != 0 && now - given_up_at_ < std::chrono::nanoseconds(options_.stall_time).count()) {
    longest = now - from;
  }
  for (const TransferProgress* t : transfers_) {
    longest = std::max(longest, now - t->moved_at.load(std::memory_order_relaxed));
  }
  return std::chrono::nanoseconds(longest);
}

Result<HttpResponse> HttpTransport::Send(const HttpRequest& request) {
  // Stopped already: not sent at all (curl would look at the stop only once under way, and a
  // quick request could be answered by then).
  if (request.stop.stop_requested()) return Status(ErrorKind::kCancelled, "stopped before sending");
  CURL* h = pool_->Take();
  if (h == nullptr) return Status(ErrorKind::kTransient, "curl_easy_init failed");
  curl_easy_reset(h);

  HttpResponse response;
  UploadState upload{&request, options_.send_limit.get()};
  TransferProgress progress;
  if (request.stop.stop_possible()) progress.stop = &request.stop;
  progress.moved_at = SteadyNs();
  progress.given_up_silent = &given_up_silent_;
  const size_t max_body =
      request.max_response_body > 0 ? request.max_response_body : options_.max_response_body;
  ResponseState download{&response, max_body, false, &progress};
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(h, CURLOPT_URL, request.url.c_str());
  // A proxy from the environment (http_proxy, https_proxy) serves storage and Entra ID; this
  // host's own and link-local addresses (Azurite, a managed identity's endpoint and its secret
  // header, the instance metadata service) are never sent through it: the proxy would reach its
  // own, or none, and the secret would leave the host.
  if (IsHostLocalAuthority(SplitUrl(request.url).authority)) {
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
  }
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(request.connect_timeout.count()));
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, options_.stall_bytes_per_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, static_cast<long>(options_.stall_time.count()));
  curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, OnProgress);
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, &progress);
  if (!options_.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options_.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &download);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &download);

  const auto body_size = static_cast<curl_off_t>(request.BodySize());
  const bool has_body = request.method == "PUT" || request.method == "POST";
  if (request.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (request.method == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else if (request.method == "PUT") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, body_size);
  } else if (request.method == "POST") {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, body_size);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, request.method.c_str());
  }
  if (has_body) {
    // Large bodies (blocks) in 512 KiB reads and sends instead of curl's default 64 KiB: 16
    // read callbacks and sends per 8 MiB block, not 128. Allocated per transfer.
    if (body_size > (64 << 10)) {
      curl_easy_setopt(h, CURLOPT_UPLOAD_BUFFERSIZE,
                       static_cast<long>(std::min<curl_off_t>(body_size, 512 << 10)));
    }
    curl_easy_setopt(h, CURLOPT_READFUNCTION, ReadBody);
    curl_easy_setopt(h, CURLOPT_READDATA, &upload);
    curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, SeekBody);
    curl_easy_setopt(h, CURLOPT_SEEKDATA, &upload);
  }

  // Headers exactly as given; curl's own unsigned defaults are suppressed with "Name:".
  curl_slist* headers = nullptr;
  for (const auto& [name, value] : request.headers) {
    const std::string line = value.empty() ? name + ";" : name + ": " + value;
    headers = curl_slist_append(headers, line.c_str());
  }
  for (const char* name : {"Expect", "Accept", "Content-Type", "Transfer-Encoding"}) {
    if (request.FindHeader(name) == nullptr) {
      headers = curl_slist_append(headers, (std::string(name) + ":").c_str());
    }
  }
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);

  {
    std::lock_guard lock(transfers_mu_);
    transfers_.insert(&progress);
  }
  const CURLcode code = curl_easy_perform(h);
  {
    // Given up (at the stall limit) after a silence of a quarter of it or more: that silence
    // goes on until storage sends a byte (the retry starts a clock of its own). It counts from
    // the earliest start among silences given up less than a stall limit apart; each try of one
    // retried request lasts a stall limit, so its hold counts from that try's start. Not a
    // connect timeout, nor a timeout of a body still moving. Noted in the same hold of the lock
    // as the request leaves the registry, so that the silence shows throughout.
    std::lock_guard lock(transfers_mu_);
    if (const int64_t now = SteadyNs(), from = progress.moved_at.load(std::memory_order_relaxed);
        code == CURLE_OPERATION_TIMEDOUT &&
        now - from >= std::chrono::nanoseconds(options_.stall_time).count() / 4) {
      const bool lapsed =
          now - given_up_at_ >= std::chrono::nanoseconds(options_.stall_time).count();
      given_up_at_ = now;
      // A compare-and-swap: an answer may clear the hold meanwhile, without the lock (Moved).
      int64_t held = given_up_silent_.load(std::memory_order_relaxed);
      while (!given_up_silent_.compare_exchange_weak(
          held, held == 0 || lapsed ? from : std::min(held, from), std::memory_order_relaxed)) {
      }
    }
    transfers_.erase(&progress);
  }
  curl_easy_setopt(h, CURLOPT_XFERINFODATA, nullptr);  // the pooled handle outlives `progress`
  long status = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, nullptr);
  curl_slist_free_all(headers);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, nullptr);

  if (code != CURLE_OK) {
    // A failed handle may hold a broken connection; curl closes it itself, the handle is fine.
    pool_->Give(h, options_.max_idle_handles);
    if (download.too_large) {
      return Status(ErrorKind::kPermanent, "HTTP " + std::to_string(status) +
                                               " response body larger than " +
                                               std::to_string(max_body) + " bytes");
    }
    if (upload.read_short || upload.read_errno != 0) {
      // A file body is a staging copy (the only file bodies sent). One that ends early changed
      // since it was written and hashed: a torn copy no resend of it can repair. One that cannot
      // be read is staging failing, as the file processor judges its own staging reads. Either
      // is staging's trouble, not the request's nor storage's: kStaging, which RetryDelay does
      // not retry (a resend reads the same copy) and the file processor waits out, copying the
      // file again.
      return Status(ErrorKind::kStaging,
                    upload.read_short
                        ? "reading request body: the file ended before the body did (changed "
                          "since it was written)"
                        : ErrnoStatus("reading request body", upload.read_errno).message());
    }
    // The code's own text, then curl's detail. curl keeps the first error of a transfer: a
    // pooled connection found dead, then a fresh connect refused, details "Recv failure" under
    // CURLE_COULDNT_CONNECT, so the detail alone would name the wrong failure.
    std::string text = "curl error " + std::to_string(static_cast<int>(code)) + " (" +
                       curl_easy_strerror(code) + ")";
    if (errbuf[0] != '\0') text += ": " + WithoutUserInfo(errbuf);
    return Status(KindOf(code), text);
  }
  pool_->Give(h, options_.max_idle_handles);
  response.status = status;
  return response;
}

std::string WithoutUserInfo(std::string_view text) {
  // Word by word (a URL holds no space), each word's user info as UserInfoSpan finds it.
  std::string out;
  out.reserve(text.size());
  while (!text.empty()) {
    const size_t begin = text.find_first_not_of(" \t\r\n");
    out.append(text.substr(0, begin));
    if (begin == std::string_view::npos) break;
    text.remove_prefix(begin);
    const std::string_view word = text.substr(0, text.find_first_of(" \t\r\n"));
    text.remove_prefix(word.size());
    // Without a scheme the user info starts after any opening quote or bracket.
    const size_t skip =
        word.find("://") != std::string_view::npos ? 0 : word.find_first_not_of("'\"`<([{");
    const auto user =
        skip == std::string_view::npos ? std::nullopt : UserInfoSpan(word.substr(skip));
    if (!user) {
      out.append(word);
    } else {  // the '@' is kept: "REDACTED@host"
      out.append(word.substr(0, skip + user->first))
          .append("REDACTED")
          .append(word.substr(skip + user->second - 1));
    }
  }
  return out;
}

}  // namespace nbu::azure
