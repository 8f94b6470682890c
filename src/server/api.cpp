#include "server/api.h"

#include "core/layout.h"
#include "telemetry/prometheus.h"
#include "util/listen_socket.h"
#include "util/log.h"
#include "util/text.h"
#include "util/utf8.h"
#include "util/uuid.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

namespace nbu::server {
namespace {

constexpr size_t kMaxHead = size_t{16} * 1024;  // request line and headers
constexpr size_t kMaxBody = size_t{64} * 1024;
constexpr auto kRequestTime = std::chrono::seconds(10);  // to receive a whole request
constexpr int kIoTimeoutMs = 5000;                       // to send the answer

// A request received whole before cpp-httplib sees it, then served from memory. cpp-httplib
// 0.11 reads a header line of any length into memory, and waits for a slow client as long as
// each byte comes within its read timeout, holding one of its few threads: here a head longer
// than kMaxHead is answered 431, a body announced larger than kMaxBody 413 (or a length that
// is not a number 400), and a request not received within kRequestTime 408, all as JSON. The
// library reads nothing from the socket: past what was received, the stream ends.
class ReceivedRequest final : public httplib::Stream {
 public:
  enum class Outcome { kComplete, kHeadTooLarge, kBodyTooLarge, kBadHeader, kTooSlow, kGone };

  explicit ReceivedRequest(int sock) : sock_(sock) {}

  // `deadline`: when the whole request must be in (kRequestTime after the connection was
  // accepted, not after a thread took it up: one that waited its turn has had its time).
  Outcome Receive(const std::atomic<bool>& stopping,
                  std::chrono::steady_clock::time_point deadline) {
    size_t need = 0;  // head and body, once the head is in
    bool late_pass_done = false;
    char chunk[8192];
    for (;;) {
      if (need == 0) {
        const size_t end = buf_.find("\r\n\r\n");
        // A head line ending in a bare LF is refused (ReadHead) as soon as it arrives: its head
        // may never end in CRLF CRLF ("...\n\n"), and waiting for that would hold a thread
        // until the 408, refusing it for the wrong reason. The head ends at the first empty
        // line, so every LF before the first CRLF CRLF is in it.
        if (HasBareLf(std::min({end, buf_.size(), kMaxHead}))) return Outcome::kBadHeader;
        if (end == std::string::npos ? buf_.size() >= kMaxHead : end + 4 > kMaxHead) {
          return Outcome::kHeadTooLarge;
        }
        if (end != std::string::npos) {
          const std::string head_text = DropRanges(end + 2);  // through the last header's CRLF
          const Head head = ReadHead(head_text);
          if (head.refused != Outcome::kComplete) return head.refused;
          need = head_text.size() + 2 + head.body;
          // A client that waits to be asked for its body is asked (the library would ask too
          // late: only once the body is here). A second 100 from the library is legal HTTP.
          if (head.expects_continue && buf_.size() < need && !late_pass_done)
            WriteAll("HTTP/1.1 100 Continue\r\n\r\n");
        }
      }
      if (need != 0 && buf_.size() >= need) return Outcome::kComplete;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        // What already arrived still counts: a request that waited its turn whole is served.
        if (late_pass_done || !ReadWhatArrived()) return Outcome::kTooSlow;
        late_pass_done = true;
        continue;
      }
      if (stopping.load()) return Outcome::kGone;
      if (!Readable(std::min<int64_t>(left.count(), 100))) continue;
      const ssize_t n = ::recv(sock_, chunk, sizeof chunk, 0);  // past kMaxHead by a chunk at most
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return Outcome::kGone;
      if (n > 0) buf_.append(chunk, static_cast<size_t>(n));
    }
  }

  bool is_readable() const override { return pos_ < buf_.size(); }
  bool is_writable() const override { return Wait(POLLOUT, kIoTimeoutMs); }
  ssize_t read(char* ptr, size_t size) override {
    const size_t n = std::min(size, buf_.size() - pos_);
    std::memcpy(ptr, buf_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    return Wait(POLLOUT, kIoTimeoutMs) ? ::send(sock_, ptr, size, MSG_NOSIGNAL) : -1;
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    Address(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    Address(::getsockname, ip, port);
  }
  int socket() const override { return sock_; }

  // A whole answer, for requests that never reach the library.
  void Answer(int status, const char* reason, const std::string& message) {
    const std::string body = nlohmann::json{{"error", message}}.dump();
    WriteAll("HTTP/1.1 " + std::to_string(status) + " " + reason +
             "\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
  }

  // Reads, without waiting, what has arrived, until the buffer could hold the largest head and
  // body (and a chunk); true if anything did.
  bool ReadWhatArrived() {
    bool any = false;
    char chunk[8192];
    while (buf_.size() < kMaxHead + kMaxBody) {
      const ssize_t n = ::recv(sock_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n <= 0) break;
      buf_.append(chunk, static_cast<size_t>(n));
      any = true;
    }
    return any;
  }

  // Ends the answer, then reads what the client still sends (until `until`, at most 1 s from
  // now, whatever its size: a refused body may be large) before the socket is closed: closing
  // with unread bytes resets the connection, and a reset can destroy an answer the client has
  // not read yet.
  void Finish(const std::atomic<bool>& stopping, std::chrono::steady_clock::time_point until) {
    ::shutdown(sock_, SHUT_WR);
    ReadWhatArrived();  // at least what is there now, whatever the time left
    until = std::min(until, std::chrono::steady_clock::now() + std::chrono::seconds(1));
    char chunk[65536];
    while (!stopping.load()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;
      if (!Readable(std::min<int64_t>(left.count(), 100))) continue;
      const ssize_t n = ::recv(sock_, chunk, sizeof chunk, 0);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return;
    }
  }

 private:
  struct Head {
    size_t body = 0;  // bytes announced by Content-Length
    bool expects_continue = false;
    Outcome refused = Outcome::kComplete;
  };
  // Removes Range and If-Range lines from the head, the first `head_size` bytes of what was
  // received, and returns what is left of it. No answer here has parts, and the library would
  // build a range request's answer in memory once per range, overlapping or not: thousands of
  // copies of /metrics for one request. A server may ignore Range (RFC 9110 14.2).
  std::string DropRanges(size_t head_size) {
    for (size_t from = buf_.find('\n'); from != std::string::npos && from + 1 < head_size;) {
      const size_t eol = buf_.find('\n', from + 1);
      const std::string name = LowerAscii(buf_.substr(from + 1, std::min<size_t>(9, eol - from)));
      if (name.rfind("range:", 0) == 0 || name.rfind("if-range:", 0) == 0) {
        buf_.erase(from + 1, eol - from);
        head_size -= eol - from;
      } else {
        from = eol;
      }
    }
    return buf_.substr(0, head_size);
  }
  // True if a LF among the first `size` bytes received is not preceded by CR.
  bool HasBareLf(size_t size) const {
    for (size_t lf = buf_.find('\n'); lf < size; lf = buf_.find('\n', lf + 1)) {
      if (lf == 0 || buf_[lf - 1] != '\r') return true;
    }
    return false;
  }
  // What the head announces. A chunked body is not waited for (the library refuses it, 411).
  // Refused (RFC 9112 5.1, 2.2, 6.3): a line that is no field (no colon, or no name before it),
  // which the library skips; whitespace before a header's colon or at the start of a line (an
  // obsolete folded line), which the library would take as part of the name, missing the
  // header; a line ending in a bare LF, which the
  // library skips, so that a Content-Length it did not see would turn a POST bodiless; and
  // Content-Length lines that differ.
  static Head ReadHead(const std::string& head) {
    Head h;
    bool length_seen = false;
    bool chunked = false;
    size_t length = 0;
    for (size_t eol = head.find('\n'); eol != std::string::npos; eol = head.find('\n', eol + 1)) {
      if (eol == 0 || head[eol - 1] != '\r') {
        h.refused = Outcome::kBadHeader;
        return h;
      }
    }
    size_t from = head.find('\n');  // past the request line
    while (from != std::string::npos && from + 1 < head.size()) {
      const size_t eol = head.find('\n', from + 1);
      std::string line = head.substr(from + 1, eol - from - 2);  // without its CRLF
      from = eol;
      const size_t colon = line.find(':');
      if (colon == std::string::npos || colon == 0) {
        h.refused = Outcome::kBadHeader;
        return h;
      }
      if (line[colon - 1] == ' ' || line[colon - 1] == '\t' || line[0] == ' ' || line[0] == '\t') {
        h.refused = Outcome::kBadHeader;
        return h;
      }
      const std::string name = LowerAscii(line.substr(0, colon));
      const size_t v = line.find_first_not_of(" \t", colon + 1);
      const size_t w = line.find_last_not_of(" \t");
      const std::string value = v == std::string::npos ? "" : line.substr(v, w + 1 - v);
      if (name == "transfer-encoding") chunked = true;
      if (name == "expect") h.expects_continue = LowerAscii(value) == "100-continue";
      if (name != "content-length") continue;
      const bool digits = !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
      });
      if (!digits) {
        h.refused = Outcome::kBadHeader;
        return h;
      }
      errno = 0;
      const unsigned long long len = std::strtoull(value.c_str(), nullptr, 10);
      if (errno == ERANGE || len > kMaxBody) {
        h.refused = Outcome::kBodyTooLarge;
        return h;
      }
      if (length_seen && len != length) {
        h.refused = Outcome::kBadHeader;
        return h;
      }
      length_seen = true;
      length = static_cast<size_t>(len);
      h.body = length;
    }
    if (chunked) h.body = 0;
    return h;
  }
  void WriteAll(const std::string& data) {
    for (size_t off = 0; off < data.size();) {
      const ssize_t n = write(data.data() + off, data.size() - off);
      if (n <= 0) return;
      off += static_cast<size_t>(n);
    }
  }
  bool Readable(int64_t ms) const { return Wait(POLLIN, static_cast<int>(ms)); }
  bool Wait(short events, int ms) const {
    pollfd p{sock_, events, 0};
    int r = 0;
    while ((r = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    return r > 0;
  }
  template <typename F>
  void Address(F get, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (get(sock_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char host[64] = {0};
    char serv[16] = {0};
    if (::getnameinfo(reinterpret_cast<sockaddr*>(&a), len, host, sizeof host, serv, sizeof serv,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
      ip = host;
      port = std::atoi(serv);
    }
  }

  const int sock_;
  std::string buf_;
  size_t pos_ = 0;
};

// How the connection a handler is about to serve arrived: when it was accepted, and whether it
// is to be turned away unread (too many are waiting).
struct Arrival {
  std::chrono::steady_clock::time_point accepted;
  bool shed = false;
};
thread_local Arrival tls_arrival;

// The library's thread pool, with a bound on the connections that wait for a thread and their
// time of arrival. Past kMaxWaiting, a connection is answered 503 at once on the accepting
// thread, not queued: a flood of idle connections neither grows the queue (and the process's
// open files) without bound nor delays a probe by more than kRequestTime.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  static constexpr size_t kThreads = 32;
  static constexpr size_t kMaxWaiting = 64;

  ConnectionPool() {
    for (size_t i = 0; i < kThreads; ++i) threads_.emplace_back([this] { Work(); });
  }
  ~ConnectionPool() override { shutdown(); }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  void enqueue(std::function<void()> fn) override {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mu_);
      if (waiting_.size() < kMaxWaiting) {
        waiting_.push_back({std::move(fn), now});
        cv_.notify_one();
        return;
      }
    }
    tls_arrival = {now, true};
    fn();
  }
  // Serves what is waiting (a stopping server answers it at once), then joins.
  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      shutdown_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

 private:
  struct Job {
    std::function<void()> fn;
    std::chrono::steady_clock::time_point accepted;
  };
  void Work() {
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !waiting_.empty() || shutdown_; });
        if (waiting_.empty()) return;
        job = std::move(waiting_.front());
        waiting_.pop_front();
      }
      tls_arrival = {job.accepted, false};
      job.fn();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> waiting_;  // guarded by mu_
  bool shutdown_ = false;    // guarded by mu_
  std::vector<std::thread> threads_;
};

class GuardedServer final : public httplib::Server {
 public:
  void Stopping() { stopping_ = true; }
  // Called on the accepting thread for each connection turned away unread.
  void OnTurnedAway(std::function<void()> f) { on_turned_away_ = std::move(f); }

 private:
  // One request per connection: a refused request's unread body is never parsed as the next
  // request, and no idle client holds a thread between requests.
  bool process_and_close_socket(int sock) override {
    ReceivedRequest request(sock);
    const Arrival arrival = tls_arrival;
    const auto deadline = arrival.accepted + kRequestTime;
    if (arrival.shed) {
      if (on_turned_away_) on_turned_away_();
      request.Answer(503, "Service Unavailable",
                     "too many connections waiting for an answer; try again shortly");
      request.Finish(stopping_, std::chrono::steady_clock::now());
      ::close(sock);
      return true;
    }
    switch (request.Receive(stopping_, deadline)) {
      case ReceivedRequest::Outcome::kComplete: {
        bool closed = false;
        process_request(request, /*close_connection=*/true, closed, nullptr);
        break;
      }
      case ReceivedRequest::Outcome::kHeadTooLarge:
        request.Answer(431, "Request Header Fields Too Large",
                       "request line and headers larger than 16 KiB");
        break;
      case ReceivedRequest::Outcome::kBodyTooLarge:
        request.Answer(413, "Payload Too Large", "request body too large (at most 64 KiB)");
        break;
      case ReceivedRequest::Outcome::kBadHeader:
        request.Answer(400, "Bad Request",
                       "malformed request head: a line not ending in CRLF or that is no "
                       "header field, a space before a colon, or a Content-Length that is not a "
                       "number or differs from another");
        break;
      case ReceivedRequest::Outcome::kTooSlow:
        request.Answer(408, "Request Timeout", "the request did not arrive within 10 s");
        break;
      case ReceivedRequest::Outcome::kGone: break;
    }
    // A connection that waited out its time for a thread is not waited for any longer.
    request.Finish(stopping_, deadline + std::chrono::seconds(1));
    ::close(sock);
    return true;
  }
  std::atomic<bool> stopping_{false};
  std::function<void()> on_turned_away_;  // set before serving
};

void Json(httplib::Response& res, int status, const nlohmann::json& body) {
  res.status = status;
  res.set_content(DumpJson(body), "application/json");
}

// The credentials of an "Authorization: Bearer <token>" header (the scheme in any case, RFC
// 9110 11.1); empty for any other header.
std::string BearerToken(const std::string& header) {
  constexpr std::string_view kScheme = "bearer ";
  if (header.size() <= kScheme.size()) return "";
  for (size_t i = 0; i < kScheme.size(); ++i) {
    if (LowerAscii(header[i]) != kScheme[i]) return "";
  }
  const size_t from = header.find_first_not_of(' ', kScheme.size());
  return from == std::string::npos ? "" : header.substr(from);
}

// Compares in a time that does not depend on where the two differ.
bool SameSecret(const std::string& given, const std::string& expected) {
  unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i] ^ (i < given.size() ? given[i] : 0));
  }
  return diff == 0;
}

void Error(httplib::Response& res, int status, const std::string& message) {
  Json(res, status, {{"error", message}});
}

// Whether a Content-Type names JSON: application/json in any case, parameters (charset) allowed.
bool IsJsonMediaType(const std::string& value) {
  const std::string type(TrimSpaceAscii(std::string_view(value).substr(0, value.find(';'))));
  return LowerAscii(type) == "application/json";
}

// The bytes a request announces by Content-Length (ReceivedRequest let only digits through, and
// no more than kMaxBody); 0 without one.
size_t AnnouncedLength(const httplib::Request& req) {
  const std::string v = req.get_header_value("Content-Length");
  size_t n = 0;
  std::from_chars(v.data(), v.data() + v.size(), n);
  return n;
}

// Parses a request body that must be a JSON object. Returns the message of a 400 when it is not
// one, or when an object in it names a key twice: {"session_name":"a/b","session_name":"ok"}
// would otherwise be taken as its last value, what a check of the first would have refused.
std::optional<std::string> ParseObject(const std::string& text, nlohmann::json* out) {
  std::vector<std::set<std::string>> keys;  // of each object open at the point parsed
  std::optional<std::string> duplicate;
  const nlohmann::json::parser_callback_t check = [&](int, nlohmann::json::parse_event_t event,
                                                      nlohmann::json& parsed) {
    using Event = nlohmann::json::parse_event_t;
    if (event == Event::object_start) {
      keys.emplace_back();
    } else if (event == Event::object_end && !keys.empty()) {
      keys.pop_back();
    } else if (event == Event::key && !keys.empty() && !duplicate &&
               !keys.back().insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  // The parser takes a NUL byte for the end of the input, so {"session_name":"x"}\0garbage
  // would pass; JSON has no raw NUL anywhere.
  if (text.find('\0') != std::string::npos) return "request body is not valid JSON";
  *out = nlohmann::json::parse(text, check, /*allow_exceptions=*/false);
  if (out->is_discarded()) return "request body is not valid JSON";
  if (!out->is_object()) return "request body must be a JSON object";
  if (duplicate) return "request body names \"" + duplicate->substr(0, 64) + "\" twice";
  return std::nullopt;
}

// A body for a route that takes no fields: none, or an empty JSON object. True when `res` was
// answered (400 for what is not a JSON object, 422 for a field: {"session_name":"x"} sent to
// stop would otherwise stop whichever session is active).
bool RefusedFieldlessBody(const httplib::Request& req, httplib::Response& res) {
  if (req.body.empty()) return false;
  nlohmann::json body;
  if (const auto problem = ParseObject(req.body, &body)) {
    Error(res, 400, *problem);
    return true;
  }
  if (!body.empty()) {
    Error(res, 422,
          "unknown field \"" + body.begin().key().substr(0, 64) + "\" (this route takes none)");
    return true;
  }
  return false;
}

nlohmann::json SessionJson(const core::SessionState& s) {
  return {{"session_name", s.name}, {"started_at", s.started_at}, {"active", s.active}};
}

}  // namespace

Api::Api(core::Service& service, const telemetry::MetricsRegistry& metrics, Clock& clock,
         std::string post_token)
    : service_(service),
      metrics_(metrics),
      clock_(clock),
      post_token_(std::move(post_token)),
      server_(std::make_unique<GuardedServer>()) {
  Routes();
  static_cast<GuardedServer&>(*server_).OnTurnedAway([this] {
    service_.instruments().api_turned_away.Add();
    if (uint64_t held_back = 0;
        turned_away_log_.Allow(std::chrono::steady_clock::now(), &held_back)) {
      LogWarn("API connections turned away: every thread busy and 64 waiting",
              {{"also_since_last_warning", held_back}});
    }
  });
}

Api::~Api() { Stop(); }

int Api::Bind(const std::string& host, int port) {
  if (port == 0) return server_->bind_to_any_port(host);
  return server_->bind_to_port(host, port) ? port : -1;
}

void Api::Serve() { server_->listen_after_bind(); }

bool Api::WaitServing(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!server_->is_running()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void Api::Stop() {
  if (!server_) return;
  static_cast<GuardedServer&>(*server_).Stopping();
  server_->stop();
}

void Api::Routes() {
  httplib::Server& s = *server_;
  s.set_socket_options(ReuseAddressOnly);
  // cpp-httplib 0.11 checks this limit against Content-Length only: the pre-routing handler
  // below refuses every other way of sending a body before it is read.
  s.set_payload_max_length(kMaxBody);
  // Each client holds a thread while its request arrives (at most kRequestTime from its
  // connection): more threads than the library's 8, so a few slow clients do not leave probes
  // and operators waiting, and a bound on the connections waiting for one.
  s.new_task_queue = [] { return new ConnectionPool(); };
  // Range is ignored (DropRanges): say so. The library would answer a HEAD with
  // "Accept-Ranges: bytes", promising what the GET does not do; it adds that header only to an
  // answer without one.
  s.set_default_headers({{"Accept-Ranges", "none"}});

  s.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
    Json(res, 200, {{"status", "ok"}});
  });
  s.Get("/readyz", [this](const httplib::Request&, httplib::Response& res) {
    if (service_.ready()) {
      Json(res, 200, {{"status", "ready"}});
    } else if (service_.stopping()) {
      Json(res, 503, {{"status", "stopping"}, {"reason", "shutting down"}});
    } else {
      Json(res, 503,
           {{"status", "starting"},
            {"reason", "storage check or start-up recovery still under way"}});
    }
  });
  // POST handlers by path: registered with the server and kept for bodiless requests (below).
  auto posts = std::make_shared<std::map<std::string, httplib::Server::Handler>>();
  auto post = [&](const std::string& path, httplib::Server::Handler handler) {
    (*posts)[path] = handler;
    s.Post(path, std::move(handler));
  };
  post("/v1/watch/start", [this](const httplib::Request& req, httplib::Response& res) {
    std::string name;
    if (!req.body.empty()) {
      nlohmann::json body;
      if (const auto problem = ParseObject(req.body, &body)) return Error(res, 400, *problem);
      for (const auto& [key, value] : body.items()) {
        if (key != "session_name") {
          return Error(
              res, 422,
              "unknown field \"" + key.substr(0, 64) + "\" (the only one is session_name)");
        }
      }
      if (body.contains("session_name") && !body["session_name"].is_null()) {
        if (!body["session_name"].is_string()) {
          return Error(res, 422, "session_name must be a string");
        }
        name = body["session_name"].get<std::string>();
        if (!core::IsValidSessionName(name)) {
          return Error(res, 422,
                       "session_name must be 1-128 characters of [A-Za-z0-9._-], not . or ..");
        }
      }
    }
    if (name.empty()) name = NewUuidV7(clock_.WallNow());
    core::SessionState state;
    std::string error;
    switch (service_.StartWatch(name, &state, &error)) {
      case core::Service::WatchError::kNone: return Json(res, 200, SessionJson(state));
      case core::Service::WatchError::kAlreadyActive:
        return Json(res, 409,
                    {{"error", "a watch session is already active"}, {"session_name", state.name}});
      default: return Error(res, 503, "cannot persist the session: " + error);
    }
  });
  post("/v1/watch/stop", [this](const httplib::Request& req, httplib::Response& res) {
    if (RefusedFieldlessBody(req, res)) return;
    core::SessionState state;
    std::string error;
    switch (service_.StopWatch(&state, &error)) {
      case core::Service::WatchError::kNone: return Json(res, 200, SessionJson(state));
      case core::Service::WatchError::kNotActive:
        return Error(res, 409, "no watch session is active");
      default: return Error(res, 503, "cannot persist the session: " + error);
    }
  });
  s.Get("/v1/status", [this](const httplib::Request&, httplib::Response& res) {
    Json(res, 200, service_.StatusJson());
  });
  post("/v1/failed/retry", [this](const httplib::Request& req, httplib::Response& res) {
    if (RefusedFieldlessBody(req, res)) return;
    std::vector<std::string> errors;
    size_t left = 0;
    const size_t n = service_.RetryFailed(&errors, &left);
    Json(res, 200, {{"queued", n}, {"left_for_sweeper", left}, {"errors", errors}});
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(telemetry::RenderPrometheus(metrics_), telemetry::kPrometheusContentType);
  });

  // Runs before any body is read. Only a body announced by Content-Length is received before
  // the library sees the request (ReceivedRequest), so a chunked one is refused here, and so is
  // a compressed one (inflated past the limit) and any other method. A request without
  // Content-Length or Transfer-Encoding has no body (RFC 9112 6.3), as `curl -X POST` sends it,
  // but the library would read such a POST as one lasting until the connection ends: it is
  // dispatched here. An unknown path gets 404 (405 for a known path, and for any
  // other method) from the error handler below.
  s.set_pre_routing_handler([this, posts](const httplib::Request& req, httplib::Response& res) {
    if (req.method == "POST" && !post_token_.empty() &&
        !SameSecret(BearerToken(req.get_header_value("Authorization")), post_token_)) {
      res.set_header("WWW-Authenticate", "Bearer");
      Error(res, 401, "this route needs Authorization: Bearer <APP_HTTP_TOKEN>");
      return httplib::Server::HandlerResponse::Handled;
    }
    // Before the service starts (its replica-id check), nothing may change the volume; nor once
    // it stops (the change could be cut short, and another replica serves it).
    if (req.method == "POST" && (!service_.started() || service_.stopping())) {
      Error(res, 503,
            service_.stopping() ? "the service is stopping; send this to another replica"
                                : "the service is starting; try again in a few seconds");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Transfer-Encoding")) {
      Error(res, 411, "send the body with Content-Length (at most 64 KiB), not chunked");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.has_header("Content-Encoding") &&
        req.get_header_value("Content-Encoding") != "identity") {
      Error(res, 415, "a compressed body is not accepted");
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD" && req.method != "POST") {
      res.status = 404;  // 405 on a known path, by the error handler
      return httplib::Server::HandlerResponse::Handled;
    }
    // A body is JSON: one sent as anything else is refused before it is read (the library would
    // parse a form-encoded one into parameters, and answer 413 past 8 KiB). No body, with any
    // type (`curl -d ''` sends a form type), and a body without a Content-Type are taken.
    if (req.method == "POST" && posts->count(req.path) != 0 && AnnouncedLength(req) > 0) {
      for (size_t i = 0; i < req.get_header_value_count("Content-Type"); ++i) {
        if (!IsJsonMediaType(req.get_header_value("Content-Type", i))) {
          Error(res, 415,
                "the body must be JSON, sent with Content-Type: application/json (curl: -H "
                "'Content-Type: application/json')");
          return httplib::Server::HandlerResponse::Handled;
        }
      }
    }
    if (req.method != "POST" || req.has_header("Content-Length")) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    const auto it = posts->find(req.path);
    if (it != posts->end()) {
      it->second(req, res);
    } else {
      res.status = 404;
    }
    return httplib::Server::HandlerResponse::Handled;
  });

  // Known paths with the wrong method: 405; anything else: 404; both as JSON.
  s.set_error_handler([posts](const httplib::Request& req, httplib::Response& res) {
    if (res.status == 404) {
      static const char* kGets[] = {"/healthz", "/readyz", "/v1/status", "/metrics"};
      const bool get = std::find(std::begin(kGets), std::end(kGets), req.path) != std::end(kGets);
      if (get || posts->count(req.path) != 0) {
        res.set_header("Allow", get ? "GET, HEAD" : "POST");
        return Error(res, 405, "method " + req.method + " not allowed on " + req.path);
      }
      return Error(res, 404, "no such route: " + req.method + " " + req.path);
    }
    if (res.status == 413) return Error(res, 413, "request body too large");
    if (res.status >= 400 && res.body.empty()) return Error(res, res.status, "bad request");
  });
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    Error(res, 500, "internal error");
  });
}

}  // namespace nbu::server
