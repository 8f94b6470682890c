#include "support/fault_proxy.h"

#include "support/process.h"
#include "util/text.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace nbu::test {
namespace {

// Reads one request (head + Content-Length body). False on EOF or error.
bool ReadRequest(int fd, std::string* head, std::string* body) {
  std::string buf;
  char chunk[65536];
  size_t head_end = std::string::npos;
  while (head_end == std::string::npos) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buf.append(chunk, static_cast<size_t>(n));
    head_end = buf.find("\r\n\r\n");
  }
  *head = buf.substr(0, head_end + 4);
  *body = buf.substr(head_end + 4);
  size_t length = 0;
  const std::string lower = LowerAscii(*head);
  if (const auto p = lower.find("\r\ncontent-length:"); p != std::string::npos) {
    length = std::stoull(lower.substr(p + 17));
  }
  while (body->size() < length) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    body->append(chunk, static_cast<size_t>(n));
  }
  return true;
}

// Replaces (or adds) the Connection header with "close".
std::string WithConnectionClose(const std::string& head) {
  std::string out;
  size_t pos = 0;
  while (pos < head.size()) {
    const size_t eol = head.find("\r\n", pos);
    const std::string line = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.empty()) break;
    const std::string lower = LowerAscii(line);
    if (lower.rfind("connection:", 0) == 0 || lower.rfind("keep-alive:", 0) == 0) continue;
    out += line + "\r\n";
  }
  return out + "Connection: close\r\n\r\n";
}

// `response` without the header lines named `name` (any case).
std::string WithoutHeader(const std::string& response, const std::string& name) {
  const size_t end = response.find("\r\n\r\n");
  if (end == std::string::npos) return response;
  std::string out;
  size_t pos = 0;
  while (pos < end) {
    const size_t eol = response.find("\r\n", pos);
    const std::string line = response.substr(pos, eol - pos);
    pos = eol + 2;
    const size_t colon = line.find(':');
    if (colon != std::string::npos && LowerAscii(line.substr(0, colon)) == name) continue;
    out += line + "\r\n";
  }
  return out + response.substr(end + 2);
}

}  // namespace

FaultProxy::FaultProxy(int upstream_port, Plan plan)
    : upstream_port_(upstream_port), plan_(std::move(plan)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // Non-blocking: the acceptor calls accept() holding mu_ (see AcceptLoop), and must not wait
  // there for a connection that was reset after poll() saw it.
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 128) != 0 || ::fcntl(listen_fd_, F_SETFL, O_NONBLOCK) != 0) {
    throw std::runtime_error("fault proxy: bind/listen failed");
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

FaultProxy::~FaultProxy() {
  stop_ = true;
  ::shutdown(listen_fd_, SHUT_RDWR);
  ::close(listen_fd_);
  acceptor_.join();
  std::vector<std::thread> handlers;
  {
    std::lock_guard lock(mu_);
    handlers.swap(handlers_);
  }
  for (auto& t : handlers) t.join();
}

void FaultProxy::SetPlan(Plan plan) {
  std::lock_guard lock(mu_);
  plan_ = std::move(plan);
}

size_t FaultProxy::Count(const std::string& needle, const std::string& method) const {
  std::lock_guard lock(mu_);
  return static_cast<size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const ProxyRequest& r) {
    return r.target.find(needle) != std::string::npos && (method.empty() || r.method == method);
  }));
}

void FaultProxy::ResetCounts() {
  std::lock_guard lock(mu_);
  seen_.clear();
}

size_t FaultProxy::active() const {
  std::lock_guard lock(mu_);
  return active_;
}

bool FaultProxy::WaitIdle(std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::unique_lock lock(mu_);
  // A connection is either in the listen queue or counted in active_: the acceptor takes it off
  // the queue and counts it while it holds mu_.
  const auto idle = [&] {
    pollfd p{listen_fd_, POLLIN, 0};
    return active_ == 0 && ::poll(&p, 1, 0) == 0;
  };
  while (!idle()) {
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    // A connection arriving in the queue sends no notice: look again within 10 ms.
    idle_.wait_until(lock, std::min(deadline, now + std::chrono::milliseconds(10)));
  }
  return true;
}

void FaultProxy::AcceptLoop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    std::lock_guard lock(mu_);
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    ++active_;
    handlers_.emplace_back([this, client] { Handle(client); });
  }
}

void FaultProxy::Handle(int client) {
  struct Done {  // on every way out of Handle
    FaultProxy* proxy;
    ~Done() {
      std::lock_guard lock(proxy->mu_);
      if (--proxy->active_ == 0) proxy->idle_.notify_all();
    }
  } done{this};
  timeval tv{30, 0};
  ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string head, body;
  if (!ReadRequest(client, &head, &body)) {
    ::close(client);
    return;
  }
  ProxyRequest req;
  const size_t sp1 = head.find(' ');
  const size_t sp2 = head.find(' ', sp1 + 1);
  req.method = head.substr(0, sp1);
  req.target = head.substr(sp1 + 1, sp2 - sp1 - 1);
  req.index = index_++;
  Plan plan;
  {
    std::lock_guard lock(mu_);
    seen_.push_back(req);
    plan = plan_;
  }
  const FaultAction action = plan ? plan(req) : FaultAction::Forward();
  if (action.kind != FaultAction::Kind::kForward) ++faults_;
  switch (action.kind) {
    case FaultAction::Kind::kStatus: {
      const std::string xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>" +
                              action.error_code + "</Code><Message>injected</Message></Error>";
      std::string resp =
          "HTTP/1.1 " + std::to_string(action.status) + " Injected\r\n" +
          "x-ms-error-code: " + action.error_code + "\r\n" +
          "Content-Type: application/xml\r\nConnection: close\r\n" +
          "Content-Length: " + std::to_string(req.method == "HEAD" ? 0 : xml.size()) + "\r\n";
      if (!action.retry_after.empty()) resp += "Retry-After: " + action.retry_after + "\r\n";
      // Storage's answers carry a request id of their own, a gateway's bare status none.
      if (!action.error_code.empty()) {
        resp += "x-ms-request-id: injected-" + std::to_string(req.index) + "\r\n";
      }
      resp += "\r\n";
      if (req.method != "HEAD") resp += xml;
      SendAll(client, resp);
      ::close(client);
      return;
    }
    case FaultAction::Kind::kDropBefore: ::close(client); return;
    case FaultAction::Kind::kDelay:
      std::this_thread::sleep_for(std::chrono::milliseconds(action.delay_ms));
      break;
    case FaultAction::Kind::kFlipBodyBit:
      if (!body.empty()) body[body.size() / 2] = static_cast<char>(body[body.size() / 2] ^ 1);
      break;
    default: break;
  }
  const int up = ConnectLoopback(upstream_port_);
  if (up < 0) {  // upstream down: look like a refused connection
    ::close(client);
    return;
  }
  std::string response;
  if (SendAll(up, WithConnectionClose(head)) && SendAll(up, body)) {
    char chunk[65536];
    ssize_t n;
    while ((n = ::recv(up, chunk, sizeof chunk, 0)) > 0)
      response.append(chunk, static_cast<size_t>(n));
  }
  ::close(up);
  if (action.kind == FaultAction::Kind::kDropResponseHeader) {
    response = WithoutHeader(response, LowerAscii(action.header));
  }
  if (action.kind != FaultAction::Kind::kDropAfter) SendAll(client, response);
  ::close(client);
}

}  // namespace nbu::test
