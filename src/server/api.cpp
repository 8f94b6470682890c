#include "server/api.h"

#include "core/layout.h"
#include "telemetry/prometheus.h"
#include "util/listen_socket.h"
#include "util/log.h"
#include "util/text.h"
#include "util/utf8.h"
#include "util/uuid.h"

#include <fcntl.h>
#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
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
#include <stop_token>
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
// is not a number 400), a request not received within kRequestTime 408, and one cut short by
// the client's close 400, all as JSON. What arrives is read without waiting (Pump), so that no
// thread waits for a client (ConnectionPool::Park). The library reads nothing from the socket:
// past what was received, the stream ends. The socket is closed with this object.
class ReceivedRequest final : public httplib::Stream {
 public:
  enum class Outcome {
    kComplete,
    kHeadTooLarge,
    kBodyTooLarge,
    kBadHeader,
    kTooSlow,
    kCutShort,  // the client closed its side with part of a request sent
    kEvicted,   // waited for while too many others did (ConnectionPool::kMaxParked)
    kGone,      // closed, or failed, before sending anything
  };

  explicit ReceivedRequest(int sock) : sock_(sock) {}
  ~ReceivedRequest() override { ::close(sock_); }
  ReceivedRequest(const ReceivedRequest&) = delete;
  ReceivedRequest& operator=(const ReceivedRequest&) = delete;

  int fd() const { return sock_; }

  // Reads what has arrived, without waiting, and judges it: the outcome once the request is
  // whole or refused, nothing while more may come. At `deadline` (kRequestTime after the
  // connection was accepted, not after a thread took it up) what arrived by then still counts.
  std::optional<Outcome> Pump(std::chrono::steady_clock::time_point deadline) {
    const bool late = std::chrono::steady_clock::now() >= deadline;
    ReadWhatArrived();
    if (const auto judged = Judge()) return judged;
    if (closed_) return buf_.empty() ? Outcome::kGone : Outcome::kCutShort;
    if (late) return Outcome::kTooSlow;
    return std::nullopt;
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

  // Ends the answer: the client reads our close after it. What it sent meanwhile is dropped
  // (Drained), since closing with unread bytes resets the connection, and a reset can destroy an
  // answer the client has not read yet.
  // True once the client closed its side too: there is nothing to wait for.
  bool EndAnswer() {
    ::shutdown(sock_, SHUT_WR);
    std::string().swap(buf_);  // the request is served: its bytes go while the close is waited for
    pos_ = 0;
    return Drained();
  }
  // Reads and drops what the client still sends, without waiting (at most 1 MiB a call: a
  // refused body may keep coming); true once it closed, or the socket failed.
  bool Drained() {
    char chunk[65536];
    for (int i = 0; i < 16; ++i) {
      const ssize_t n = ::recv(sock_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n > 0 || (n < 0 && errno == EINTR)) continue;
      return n == 0 || errno != EAGAIN;
    }
    return false;
  }

 private:
  // Reads, without waiting, what has arrived, until the buffer could hold the largest head and
  // body (and a chunk). A close by the client, or a failed read, is noted: nothing more will come.
  void ReadWhatArrived() {
    char chunk[8192];
    while (buf_.size() < kMaxHead + kMaxBody) {
      const ssize_t n = ::recv(sock_, chunk, sizeof chunk, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n == 0 || (n < 0 && errno != EAGAIN)) closed_ = true;
      if (n <= 0) break;
      buf_.append(chunk, static_cast<size_t>(n));
    }
  }
  // The outcome of what was received so far, if there is one yet.
  std::optional<Outcome> Judge() {
    if (need_ == 0) {
      const size_t end = buf_.find("\r\n\r\n");
      // A head line ending in a bare LF is refused (ReadHead) as soon as it arrives: its head
      // may never end in CRLF CRLF ("...\n\n"), and waiting for that would end in a 408,
      // refusing it for the wrong reason. The head ends at the first empty line, so every LF
      // before the first CRLF CRLF is in it.
      if (HasBareLf(std::min({end, buf_.size(), kMaxHead}))) return Outcome::kBadHeader;
      if (end == std::string::npos ? buf_.size() >= kMaxHead : end + 4 > kMaxHead) {
        return Outcome::kHeadTooLarge;
      }
      if (end == std::string::npos) return std::nullopt;
      const std::string head_text = DropRanges(end + 2);  // through the last header's CRLF
      const Head head = ReadHead(head_text);
      if (head.refused != Outcome::kComplete) return head.refused;
      need_ = head_text.size() + 2 + head.body;
      // A client that waits to be asked for its body is asked (the library would ask too late:
      // only once the body is here). A second 100 from the library is legal HTTP. Nothing was
      // sent on this socket before: the write does not wait.
      if (head.expects_continue && buf_.size() < need_) WriteAll("HTTP/1.1 100 Continue\r\n\r\n");
    }
    if (buf_.size() >= need_) return Outcome::kComplete;
    return std::nullopt;
  }

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
  size_t need_ = 0;      // head and body, once the head is in
  bool closed_ = false;  // the client closed its side (or the socket failed)
};

// How the connection a handler is about to serve arrived: when it was accepted, and whether it
// is to be turned away unread (too many are waiting).
struct Arrival {
  std::chrono::steady_clock::time_point accepted;
  bool shed = false;
};
thread_local Arrival tls_arrival;

// The library's thread pool, and the connections whose request has not arrived whole. Those are
// held without a thread: one thread polls them all (Park), and a thread of the pool takes one up
// once its request is in, refused, late or cut short. After its answer, a connection is held the
// same way while the client may still send (Linger). So an idle or slow client costs a
// descriptor, never one of the threads, and probes and operators are not kept waiting behind it.
// Past kMaxParked connections waiting to send their request, the one waiting longest is
// answered 503 to make room: a flood of idle connections holds neither every place nor the
// process's open files. Past kMaxWaiting new connections waiting for a thread (all kThreads
// busy), a new connection is answered 503 at once on the accepting thread, unread.
class ConnectionPool final : public httplib::TaskQueue {
 public:
  static constexpr size_t kThreads = 32;
  static constexpr size_t kMaxWaiting = 64;
  static constexpr size_t kMaxParked = 256;
  static constexpr size_t kMaxLingering = 64;  // past that, the oldest is closed at once
  static constexpr auto kLinger = std::chrono::seconds(1);
  using Serve = std::function<void(std::shared_ptr<ReceivedRequest>, ReceivedRequest::Outcome)>;

  ConnectionPool() {
    for (size_t i = 0; i < kThreads; ++i) threads_.emplace_back([this] { Work(); });
    poller_ = std::jthread([this](const std::stop_token& stop) { Poll(stop); });
  }
  ~ConnectionPool() override {
    shutdown();
    ::close(wake_[0]);
    ::close(wake_[1]);
  }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // The pool a connection's handler runs on (null elsewhere).
  static ConnectionPool* Current() { return current_; }

  void enqueue(std::function<void()> fn) override {
    const auto now = std::chrono::steady_clock::now();
    {
      std::lock_guard lock(mu_);
      if (fresh_waiting_ < kMaxWaiting) {
        waiting_.push_back({std::move(fn), now, true});
        ++fresh_waiting_;
        cv_.notify_one();
        return;
      }
    }
    tls_arrival = {now, true};
    fn();
  }
  // Holds `request` until ReceivedRequest::Pump decides it; then `serve` runs on a thread of the
  // pool. (A connection still held when the pool shuts down is closed unanswered.)
  void Park(std::shared_ptr<ReceivedRequest> request,
            std::chrono::steady_clock::time_point deadline, Serve serve) {
    Hold({std::move(request), deadline, std::move(serve)});
  }
  // Holds `request`, answered, until the client closes or for kLinger, reading and dropping what
  // it still sends (a refused body that keeps coming), then closes it.
  void Linger(std::shared_ptr<ReceivedRequest> request) {
    Hold({std::move(request), std::chrono::steady_clock::now() + kLinger, nullptr});
  }
  // Closes the connections held (those whose request had not arrived go unanswered), serves what
  // is waiting, then joins.
  void shutdown() override {
    if (poller_.joinable()) {
      poller_.request_stop();
      Wake();
      poller_.join();
    }
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
    bool fresh = false;  // a new connection (counted against kMaxWaiting)
  };
  // A connection the poller holds: waiting for its request (`serve` set), or lingering after its
  // answer (no `serve`), until `deadline`.
  struct Held {
    std::shared_ptr<ReceivedRequest> request;
    std::chrono::steady_clock::time_point deadline;
    Serve serve;
  };

  void Hold(Held h) {
    {
      std::lock_guard lock(mu_);
      arrivals_.push_back(std::move(h));
    }
    Wake();
  }
  void Work() {
    current_ = this;
    for (;;) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return !waiting_.empty() || shutdown_; });
        if (waiting_.empty()) return;
        job = std::move(waiting_.front());
        waiting_.pop_front();
        if (job.fresh) --fresh_waiting_;
      }
      tls_arrival = {job.accepted, false};
      job.fn();
    }
  }
  // Hands a decided connection to the threads. Not counted against kMaxWaiting: each one came
  // through those places as a new connection, and is quick to serve (no thread waits for its
  // client).
  void Decided(Held h, ReceivedRequest::Outcome outcome) {
    std::lock_guard lock(mu_);
    waiting_.push_back({[h = std::move(h), outcome] { h.serve(h.request, outcome); },
                        std::chrono::steady_clock::now(), false});
    cv_.notify_one();
  }
  void Wake() {
    const char c = 0;
    [[maybe_unused]] const ssize_t n = ::write(wake_[1], &c, 1);  // full: a wake is pending
  }
  void Poll(const std::stop_token& stop) {
    // In the order they came: the front has waited longest.
    std::deque<Held> parked;
    std::deque<Held> lingering;
    std::vector<pollfd> fds;
    while (!stop.stop_requested()) {
      {
        std::lock_guard lock(mu_);
        for (auto& h : arrivals_) (h.serve ? parked : lingering).push_back(std::move(h));
        arrivals_.clear();
      }
      while (parked.size() > kMaxParked) {  // what it sent since the last look counts
        Held& oldest = parked.front();
        const auto outcome = oldest.request->Pump(oldest.deadline);
        Decided(std::move(oldest), outcome.value_or(ReceivedRequest::Outcome::kEvicted));
        parked.pop_front();
      }
      while (lingering.size() > kMaxLingering) {  // closed at once, what arrived read first
        lingering.front().request->Drained();
        lingering.pop_front();
      }
      auto now = std::chrono::steady_clock::now();
      auto next = now + std::chrono::seconds(1);
      fds.assign(1, pollfd{wake_[0], POLLIN, 0});
      for (const auto* held : {&parked, &lingering}) {
        for (const Held& h : *held) {
          fds.push_back({h.request->fd(), POLLIN, 0});
          next = std::min(next, h.deadline);
        }
      }
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(next - now).count();
      if (::poll(fds.data(), fds.size(), static_cast<int>(std::max<int64_t>(wait, 0))) < 0) {
        if (errno != EINTR) std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      if (fds[0].revents != 0) {
        char drain[64];
        while (::read(wake_[0], drain, sizeof drain) > 0) {
        }
      }
      now = std::chrono::steady_clock::now();
      size_t i = 1;
      for (auto it = parked.begin(); it != parked.end(); ++i) {
        const bool look = fds[i].revents != 0 || now >= it->deadline;
        const auto outcome = look ? it->request->Pump(it->deadline) : std::nullopt;
        if (!outcome) {
          ++it;
          continue;
        }
        Decided(std::move(*it), *outcome);
        it = parked.erase(it);
      }
      for (auto it = lingering.begin(); it != lingering.end(); ++i) {
        const bool done = (fds[i].revents != 0 && it->request->Drained()) || now >= it->deadline;
        it = done ? lingering.erase(it) : it + 1;
      }
    }
  }

  static thread_local ConnectionPool* current_;
  std::array<int, 2> wake_ = MakePipe();  // the poller's wake-up: new connections, shutdown
  static std::array<int, 2> MakePipe() {
    std::array<int, 2> p{-1, -1};
    if (::pipe2(p.data(), O_NONBLOCK | O_CLOEXEC) != 0) std::abort();  // no descriptors left
    return p;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> waiting_;     // guarded by mu_
  size_t fresh_waiting_ = 0;    // guarded by mu_: the new connections in waiting_
  std::vector<Held> arrivals_;  // guarded by mu_: for the poller to take
  bool shutdown_ = false;       // guarded by mu_
  std::vector<std::thread> threads_;
  std::jthread poller_;
};
thread_local ConnectionPool* ConnectionPool::current_ = nullptr;

class GuardedServer final : public httplib::Server {
 public:
  // Called for each connection turned away (on the accepting thread, or one of the pool's).
  void OnTurnedAway(std::function<void()> f) { on_turned_away_ = std::move(f); }

 private:
  // One request per connection: a refused request's unread body is never parsed as the next
  // request, and no idle client holds a thread between requests.
  bool process_and_close_socket(int sock) override {
    auto request = std::make_shared<ReceivedRequest>(sock);
    const Arrival arrival = tls_arrival;
    if (arrival.shed) {
      Serve(std::move(request), ReceivedRequest::Outcome::kEvicted);
      return true;
    }
    const auto deadline = arrival.accepted + kRequestTime;
    // (Every connection is served on a thread of the pool; without one, what arrived is judged
    // as it is, rather than waited for on a thread that is not the pool's.)
    ConnectionPool* pool = ConnectionPool::Current();
    if (const auto outcome = request->Pump(deadline); outcome || pool == nullptr) {
      Serve(std::move(request), outcome.value_or(ReceivedRequest::Outcome::kTooSlow));
      return true;
    }
    pool->Park(std::move(request), deadline,
               [this](std::shared_ptr<ReceivedRequest> r, ReceivedRequest::Outcome outcome) {
                 Serve(std::move(r), outcome);
               });
    return true;
  }
  void Serve(std::shared_ptr<ReceivedRequest> request, ReceivedRequest::Outcome outcome) {
    using Outcome = ReceivedRequest::Outcome;
    bool linger = true;  // the client may still be sending: its close is waited for
    switch (outcome) {
      case Outcome::kComplete: {
        bool closed = false;
        process_request(*request, /*close_connection=*/true, closed, nullptr);
        break;
      }
      case Outcome::kHeadTooLarge:
        request->Answer(431, "Request Header Fields Too Large",
                        "request line and headers larger than 16 KiB");
        break;
      case Outcome::kBodyTooLarge:
        request->Answer(413, "Payload Too Large", "request body too large (at most 64 KiB)");
        break;
      case Outcome::kBadHeader:
        request->Answer(400, "Bad Request",
                        "malformed request head: a line not ending in CRLF or that is no "
                        "header field, a space before a colon, or a Content-Length that is not a "
                        "number or differs from another");
        break;
      case Outcome::kTooSlow:  // silent for 10 s, or trickling: not waited for any longer
        request->Answer(408, "Request Timeout", "the request did not arrive within 10 s");
        linger = false;
        break;
      case Outcome::kCutShort:  // closed its side already
        request->Answer(400, "Bad Request",
                        "the client closed its side of the connection before the whole request "
                        "(head, and the body its Content-Length announces) was sent");
        linger = false;
        break;
      case Outcome::kEvicted:
        if (on_turned_away_) on_turned_away_();
        request->Answer(503, "Service Unavailable",
                        "too many connections waiting for an answer; try again shortly");
        linger = false;
        break;
      case Outcome::kGone: return;
    }
    const bool closed = request->EndAnswer();
    ConnectionPool* pool = ConnectionPool::Current();
    if (linger && !closed && pool != nullptr) pool->Linger(std::move(request));
  }
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
      LogWarn(
          "API connections turned away: 256 waiting to send their request, or every thread "
          "busy and 64 new connections waiting",
          {{"also_since_last_warning", held_back}});
    }
  });
}

Api::~Api() { Stop(); }

int Api::Bind(const std::string& host, int port) {
  const int bound =
      port == 0 ? server_->bind_to_any_port(host) : (server_->bind_to_port(host, port) ? port : -1);
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of connections (a flood, or many
  // clients at once) overflowed it, and each connection past it waited for a SYN retry, 1 s and
  // more. Listening again sets the kernel's largest.
  if (bound > 0 && listen_fd_ >= 0) ::listen(listen_fd_, SOMAXCONN);
  return bound;
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
  server_->stop();
}

void Api::Routes() {
  httplib::Server& s = *server_;
  s.set_socket_options([this](socket_t sock) {  // the listening socket's, before its bind
    ReuseAddressOnly(sock);
    listen_fd_ = sock;
  });
  // cpp-httplib 0.11 checks this limit against Content-Length only: the pre-routing handler
  // below refuses every other way of sending a body before it is read.
  s.set_payload_max_length(kMaxBody);
  // No client holds a thread while its request arrives (ConnectionPool::Park); more threads than
  // the library's 8 serve whole requests, with a bound on those waiting for one.
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
        if (!core::IsNewSessionName(name)) {
          return Error(res, 422,
                       "session_name must be 1-128 characters of [A-Za-z0-9._-], not ending in "
                       "'.'");
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
    const core::Service::RetryOutcome r = service_.RetryFailed();
    if (r.busy) return Error(res, 409, "a retry is already under way on this replica");
    Json(res, 200,
         {{"queued", r.queued},
          {"left_for_sweeper", r.left},
          {"errors", r.errors},
          {"errors_unlisted", r.errors_unlisted}});
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
    // A POST where no POST route is: 405 on a GET route, else 404 (the error handler), whatever
    // the token and the service's state, which are about changes the request could make.
    if (req.method == "POST" && posts->count(req.path) == 0) {
      res.status = 404;
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method == "POST" && !post_token_.empty() &&
        !SameSecret(BearerToken(req.get_header_value("Authorization")), post_token_)) {
      res.set_header("WWW-Authenticate", "Bearer");
      Error(res, 401, "this route needs Authorization: Bearer <APP_HTTP_TOKEN>");
      return httplib::Server::HandlerResponse::Handled;
    }
    // A POST route takes its fields in a JSON body: one given in the query (?session_name=...,
    // ?file=...) would be ignored, and the route would do something else than asked.
    if (req.method == "POST" && !req.params.empty()) {
      Error(res, 422,
            "unknown query parameter \"" + req.params.begin()->first.substr(0, 64) +
                "\": this route takes no query (its fields, if any, go in a JSON body)");
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
        LowerAscii(TrimSpaceAscii(req.get_header_value("Content-Encoding"))) != "identity") {
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
    posts->at(req.path)(req, res);  // a POST route's, as checked first
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
