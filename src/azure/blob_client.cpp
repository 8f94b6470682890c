// Blob REST client (see blob_client.h): request building, the retry loop, error mapping.
#include "azure/blob_client.h"

#include "azure/auth_failure.h"
#include "azure/url.h"
#include "azure/xml.h"
#include "util/crc64.h"
#include "util/log.h"
#include "util/uuid.h"

#include <algorithm>
#include <charconv>
#include <string_view>
#include <vector>

namespace nbu::azure {
namespace {

// A value storage sends back (an error code, a request id) as it goes into messages, logs and
// the status. Azure's are identifiers of a few dozen characters; what a proxy or a broken server
// sends in their place is cut to kMaxEchoed printable ASCII characters.
std::string Echoed(std::string text) {
  constexpr size_t kMaxEchoed = 64;
  if (text.size() > kMaxEchoed) {
    text.resize(kMaxEchoed);
    text += "...";
  }
  for (char& c : text) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return text;
}

constexpr std::string_view kRedacted = "REDACTED";

// The secrets a request carried, as an answer could quote them back: its SAS signature (as sent
// and decoded) and the credential of its Authorization header (a bearer token; a shared key's
// signature). AuthFailureDetail's patterns catch the quotes Azure makes; a proxy, a gateway or a
// server of another make may quote one anywhere, shorter than those patterns look for. Values
// under 8 characters are left: replacing them would garble the text and hide nothing.
std::vector<std::string> RequestSecrets(const HttpRequest& req) {
  std::vector<std::string> out;
  const auto add = [&](std::string v) {
    if (v.size() >= 8 && std::find(out.begin(), out.end(), v) == out.end()) {
      out.push_back(std::move(v));
    }
  };
  for (auto& [name, value] : SplitQuery(SplitUrl(req.url).query)) {
    if (name != "sig") continue;
    add(UrlDecode(value));
    add(std::move(value));
  }
  if (const std::string* auth = req.FindHeader("Authorization")) {
    const size_t space = auth->find(' ');
    const std::string_view cred =
        space == std::string::npos ? std::string_view() : std::string_view(*auth).substr(space + 1);
    const size_t colon = cred.find(':');  // SharedKey account:signature
    add(std::string(colon == std::string_view::npos ? cred : cred.substr(colon + 1)));
  }
  return out;
}

// The length of the text at `at` that reads as `secret`, each of its characters written as
// itself or as an XML character reference (&#43;, &#x2B;), as an answer's body may quote it and
// as AuthFailureDetail and ErrorCode then read it; 0 when it does not read so.
size_t QuotedAt(std::string_view text, size_t at, std::string_view secret) {
  const size_t from = at;
  for (const char c : secret) {
    if (at < text.size() && text[at] == c) {
      ++at;
      continue;
    }
    if (text.compare(at, 2, "&#") != 0) return 0;
    const bool hex = at + 2 < text.size() && (text[at + 2] == 'x' || text[at + 2] == 'X');
    const char* digits = text.data() + at + (hex ? 3 : 2);
    unsigned code = 0;
    const auto [end, ec] = std::from_chars(digits, text.data() + text.size(), code, hex ? 16 : 10);
    if (ec != std::errc() || end == digits || end == text.data() + text.size() || *end != ';' ||
        code != static_cast<unsigned char>(c)) {
      return 0;
    }
    at = static_cast<size_t>(end - text.data()) + 1;
  }
  return at - from;
}

// Every quote of a secret in `text`, written plainly or with character references, becomes
// REDACTED.
void ReplaceSecrets(std::string& text, const std::vector<std::string>& secrets) {
  for (const std::string& secret : secrets) {
    std::string out;
    size_t copied = 0;  // text before this is in `out`
    for (size_t at = 0; at < text.size();) {
      const size_t n =
          text[at] == secret.front() || text[at] == '&' ? QuotedAt(text, at, secret) : 0;
      if (n == 0) {
        ++at;
        continue;
      }
      out.append(text, copied, at - copied).append(kRedacted);
      at += n;
      copied = at;
    }
    if (copied == 0) continue;  // not quoted
    text = std::move(out.append(text, copied));
  }
}

// An answer other than success, before any of its text reaches a message, a log line, the
// status or a span: every secret of the request it answers is replaced in its headers and body.
// (A successful answer's body is data, Get Block List's, and is left as it came.)
void ScrubAnswer(HttpResponse& resp, const HttpRequest& req) {
  if (resp.status < 300) return;
  const std::vector<std::string> secrets = RequestSecrets(req);
  if (secrets.empty()) return;
  for (auto& [name, value] : resp.headers) ReplaceSecrets(value, secrets);
  ReplaceSecrets(resp.body, secrets);
}

std::string ErrorCode(const HttpResponse& resp) {
  if (const std::string* c = resp.Header("x-ms-error-code")) return Echoed(*c);
  return Echoed(XmlElement(resp.body, "Code", 0, resp.body.size()).value_or(""));
}

// ": " and storage's reason for refusing our credentials (a clock too far off, a signature
// that does not match, a SAS out of its time), secret-free, for the operator; empty if none.
std::string AuthDetail(const HttpResponse& resp) {
  if (resp.status != 401 && resp.status != 403) return "";
  const std::string detail = AuthFailureDetail(resp.body);
  return detail.empty() ? "" : ": " + detail;
}

// Storage found the body not matching the checksum sent with it.
bool IsChecksumMismatch(const std::string& code) {
  return code == "Md5Mismatch" || code == "Crc64Mismatch";
}

// Storage asking every client for less: these also slow every request down (ThrottleGate).
bool IsThrottling(long status, const std::string& code) {
  return status == 429 || status == 503 || (status == 500 && code == "OperationTimedOut");
}

// A blob that nothing of ours can write over until someone acts on it: archived (rehydrate or
// delete it first), or kept by an immutability policy or a legal hold.
bool IsLockedBlob(const std::string& code) {
  return code == "BlobArchived" || code == "BlobImmutableDueToPolicy" ||
         code == "BlobImmutableDueToLegalHold";
}

// What an answer outside a request's expected statuses says of the failure.
ErrorKind KindFor(const HttpResponse& resp) {
  const long status = resp.status;
  const std::string code = ErrorCode(resp);
  // Azure sets x-ms-request-id on every answer it gives, errors too.
  const bool storage_answered = resp.Header("x-ms-request-id") != nullptr;
  // The body did not hash to the checksum we computed from the source: the bytes read back
  // (staging copy, page cache, wire) were not the ones hashed. Resending this body cannot help,
  // re-reading the file can: a failure of this attempt, not of the request.
  if (IsChecksumMismatch(code)) return ErrorKind::kTransient;
  // A commit naming blocks storage no longer holds: another writer's commit of the same name
  // discarded them (a second version of the file), or the container was recreated.
  // The next attempt lists what is staged and sends the rest again.
  if (code == "InvalidBlockList") return ErrorKind::kTransient;
  // A bare 400 that storage did not give: a proxy's or a gateway's answer to a request cut
  // short or damaged on its way (so is Azurite's to a block list it cannot parse, where Azure
  // checks the Content-MD5 sent with it). Not a verdict on the file: a failure of this attempt,
  // which the next one sends afresh, and which dead-letters the file after
  // APP_MAX_FILE_ATTEMPTS if it never passes.
  if (status == 400 && !storage_answered) return ErrorKind::kTransient;
  if (status == 404) return ErrorKind::kNotFound;
  if (status == 409 || status == 412) {
    // A precondition of ours failed (If-None-Match: *, If-Match): the caller looks at the blob.
    if (code.empty() || code == "BlobAlreadyExists" || code == "ConditionNotMet") {
      return ErrorKind::kConflict;
    }
    // The container is going away: storage's state, not the file's.
    if (code == "ContainerBeingDeleted") return ErrorKind::kUnavailable;
    // Each try would send the whole body again to the same refusal: the file is kept aside.
    if (IsLockedBlob(code)) return ErrorKind::kPermanent;
    // A reader's lease, a copy in progress: the file's failure, by its code, tried again after
    // a backoff (a lease may be released) and counted.
    return ErrorKind::kTransient;
  }
  if (status == 401 || status == 403) return ErrorKind::kAuth;
  // Throttling and an overloaded partition outlasting every retry: storage is up and asks for
  // less. Gateways and timeouts (502, 504, 408, other 500s) describe the service too, as does
  // any other 5xx (a proxy's 507, a front end's 501): one request is not retried on those, but
  // callers wait both out instead of charging the item or dead-lettering it at once.
  if (IsThrottling(status, code)) return ErrorKind::kBusy;
  if (IsRetryableStatus(status) || (status >= 500 && status <= 599)) {
    return ErrorKind::kUnavailable;
  }
  return ErrorKind::kPermanent;
}

// Metadata names must be C# identifiers; values printable ASCII, single-spaced and untrimmed-free
// so Azure's and Azurite's header canonicalizations agree.
Status ValidateProperties(const BlobProperties& props) {
  for (const auto& [name, value] : props.metadata) {
    const bool name_ok = !name.empty() && std::isdigit(static_cast<unsigned char>(name[0])) == 0 &&
                         std::all_of(name.begin(), name.end(), [](char c) {
                           return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
                         });
    const bool value_ok =
        std::all_of(value.begin(), value.end(), [](char c) { return c >= 0x20 && c < 0x7f; }) &&
        value.find("  ") == std::string::npos &&
        (value.empty() || (value.front() != ' ' && value.back() != ' '));
    if (!name_ok) return Status(ErrorKind::kPermanent, "invalid metadata name '" + name + "'");
    if (!value_ok) {
      return Status(ErrorKind::kPermanent, "invalid value for metadata '" + name + "'");
    }
  }
  return Status::Ok();
}

void AddProperties(HttpRequest& req, const BlobProperties& props) {
  if (props.content_md5) req.SetHeader("x-ms-blob-content-md5", Base64Encode(*props.content_md5));
  if (!props.content_type.empty()) req.SetHeader("x-ms-blob-content-type", props.content_type);
  if (!props.access_tier.empty()) req.SetHeader("x-ms-access-tier", props.access_tier);
  for (const auto& [name, value] : props.metadata) req.SetHeader("x-ms-meta-" + name, value);
  if (props.if_absent) req.SetHeader("If-None-Match", "*");
  if (!props.if_match.empty()) req.SetHeader("If-Match", props.if_match);
}

void SetBody(HttpRequest& req, const Body& body) {
  if (body.fd >= 0) {
    req.body_fd = body.fd;
    req.body_offset = body.offset;
    req.body_length = body.length;
  } else {
    req.body_view = body.bytes;
  }
}

Status CheckBlockId(const std::string& block_id) {
  if (block_id.empty() || block_id.size() > 64) {
    return Status(ErrorKind::kPermanent,
                  "block id must be 1..64 bytes, got " + std::to_string(block_id.size()));
  }
  return Status::Ok();
}

std::string EncodedBlockId(const std::string& raw) {
  return UrlEncodeQueryValue(Base64Encode(raw));
}

}  // namespace

BlobClient::BlobClient(BlobClientOptions options, std::shared_ptr<Credential> credential,
                       std::shared_ptr<HttpTransport> transport, Clock& clock,
                       BlobClientObserver observer)
    : options_(std::move(options)),
      path_style_(false),
      credential_(std::move(credential)),
      transport_(std::move(transport)),
      clock_(clock),
      observer_(std::move(observer)),
      throttle_(clock) {
  while (!options_.endpoint.empty() && options_.endpoint.back() == '/')
    options_.endpoint.pop_back();
  path_style_ = SplitUrl(options_.endpoint).path.size() > 1;
}

std::string BlobClient::ContainerUrl() const {
  return options_.endpoint + "/" + options_.container;
}

std::string BlobClient::BlobUrl(const std::string& blob_name) const {
  return ContainerUrl() + "/" + UrlEncodePath(blob_name);
}

std::chrono::milliseconds RequestTimeout(const BlobClientOptions& options, uint64_t body_bytes) {
  const uint64_t rate = options.timeout_min_bytes_per_s;
  return options.timeout_base +
         std::chrono::milliseconds(rate == 0 ? 0 : static_cast<int64_t>(body_bytes * 1000 / rate));
}

Result<HttpResponse> BlobClient::Execute(HttpRequest req, const std::string& op,
                                         std::stop_token stop,
                                         std::initializer_list<long> ok_statuses, bool writes_blob,
                                         bool observed) {
  const auto observe = [&](TryOutcome outcome) {
    if (observed && observer_.on_try) observer_.on_try(outcome);
  };
  // What to log and report: the URL before any credential touches it, minus any SAS anyway.
  const std::string safe_url = RedactUrl(req.url);
  const std::string base_url = req.url;
  req.SetHeader("x-ms-version", kApiVersion);
  req.SetHeader("x-ms-client-request-id", NewUuidV7(clock_.WallNow()));
  const auto base_headers = req.headers;
  req.timeout = RequestTimeout(options_, req.BodySize());
  req.stop = stop;

  bool reauthorized = false;
  bool recreated = false;  // the container, once per call
  for (int attempt = 1;; ++attempt) {
    if (!throttle_.Wait(stop)) return Status(ErrorKind::kCancelled, op + " " + safe_url);
    req.url = base_url;
    req.headers = base_headers;
    if (Status s = credential_->Authorize(req, options_.account, path_style_); !s.ok()) {
      // No token (its endpoint down or refusing us) is never the fault of what is being sent.
      const ErrorKind kind = s.kind() == ErrorKind::kAuth || s.kind() == ErrorKind::kCancelled
                                 ? s.kind()
                                 : ErrorKind::kUnavailable;
      if (kind != ErrorKind::kCancelled) {
        observe(kind == ErrorKind::kAuth ? TryOutcome::kRefused : TryOutcome::kUnreachable);
      }
      return Status(kind, op + " " + safe_url + ": " + s.message());
    }
    Result<HttpResponse> result = transport_->Send(req);
    if (result.ok()) ScrubAnswer(*result, req);
    if (!result.ok() && result.status().kind() == ErrorKind::kCancelled) {
      return Status(ErrorKind::kCancelled, op + " " + safe_url);
    }
    const bool expected = result.ok() && std::find(ok_statuses.begin(), ok_statuses.end(),
                                                   result->status) != ok_statuses.end();
    if (!result.ok()) {
      // Connection errors and timeouts; not a body that could not be read here.
      if (result.status().kind() == ErrorKind::kUnavailable) observe(TryOutcome::kUnreachable);
    } else if (result->status != 401 || reauthorized) {  // a first 401 is tried again at once
      // As KindFor judges the answer: refusing us, storage's trouble, or an answer. One the
      // caller expects is an answer (a 403 to Create Container from credentials that may use
      // the container but not create it, which the caller then checks).
      const ErrorKind kind = result->status < 400 ? ErrorKind::kPermanent : KindFor(*result);
      // A 409 ContainerBeingDeleted is storage up and answering: the container's state, told
      // below (container_missing).
      const bool server_error =
          kind == ErrorKind::kUnavailable && (result->status == 408 || result->status >= 500);
      observe(result->status < 400       ? TryOutcome::kSucceeded
              : expected                 ? TryOutcome::kAnswered
              : kind == ErrorKind::kAuth ? TryOutcome::kRefused
              : server_error             ? TryOutcome::kServerError
                                         : TryOutcome::kAnswered);
    }
    if (expected) return result;
    if (result.ok() && result->status == 401 && !reauthorized) {
      // A stale token: drop it and try once more at once (not counted as an attempt), unless
      // the credential has nothing new to send (a key; a token replaced a moment ago).
      reauthorized = true;
      if (credential_->Invalidate()) {
        --attempt;
        continue;
      }
    }
    const std::optional<std::chrono::milliseconds> delay =
        RetryDelay(options_.retry, attempt, result, FastRandom01());
    // Every throttling answer is storage asking for less, the last try's too: it is counted,
    // and it holds every other request back, retried or not (storage is as busy for them).
    const bool throttled = result.ok() && IsThrottling(result->status, ErrorCode(*result));
    if (throttled && observer_.on_throttled) observer_.on_throttled();
    if (throttled) {
      throttle_.Throttle(delay ? *delay
                               : AnswerDelay(options_.retry, attempt, *result, FastRandom01()));
    }
    if (!delay) {
      if (!result.ok()) {
        return Status(result.status().kind(), op + " " + safe_url + ": " +
                                                  result.status().message() + " (after " +
                                                  std::to_string(attempt) + " attempts)");
      }
      const HttpResponse& resp = *result;
      const std::string* request_id = resp.Header("x-ms-request-id");
      std::string msg = op + " " + safe_url + ": HTTP " + std::to_string(resp.status);
      const std::string code = ErrorCode(resp);
      if (!code.empty()) msg += " " + code;
      msg += " (request id " + (request_id ? Echoed(*request_id) : std::string("-"));
      if (attempt > 1) msg += ", after " + std::to_string(attempt) + " attempts";
      msg += ")";
      msg += AuthDetail(resp);
      if (code == "InvalidBlobOrBlock" && op == "PutBlock") {
        // The likely cause, and what the operator can do about it, since no retry of ours can.
        msg +=
            ": likely another writer's uncommitted blocks, with block IDs of another length, "
            "staged under this name; they go when that writer commits, when the blob is "
            "written whole, or after a week";
      }
      if (IsLockedBlob(code)) {
        msg += code == "BlobArchived"
                   ? ": the blob is in the Archive tier, which cannot be written over; rehydrate "
                     "or delete it, then retry the dead letter (POST /v1/failed/retry)"
                   : ": an immutability policy or legal hold keeps the blob as it is; retry "
                     "the dead letter (POST /v1/failed/retry) once it allows the write";
      }
      if (code == "ContainerNotFound" && writes_blob && !recreated) {
        // The container vanished (deleted, or an emulator restarted empty): recreate it and
        // send once more. Failing that, storage is unusable for now: wait, do not charge the file.
        recreated = true;
        Status c = CreateContainerIfMissing(stop);
        if (c.kind() == ErrorKind::kCancelled) return c;  // a stop, not a failure to tell
        nlohmann::json fields = {{"container", options_.container}, {"ok", c.ok()}};
        if (!c.ok()) fields["error"] = c.ToString();  // no "error" field when there is none
        LogWarn("container missing; recreating it", std::move(fields));
        if (!c.ok()) {
          if (observer_.on_container_missing) observer_.on_container_missing();
          return Status(ErrorKind::kUnavailable, msg + "; recreating it failed: " + c.message());
        }
        --attempt;
        continue;
      }
      if (code == "ContainerBeingDeleted" && observer_.on_container_missing) {
        observer_.on_container_missing();  // waited out as storage's state (KindFor), any op
      }
      if (IsChecksumMismatch(code) && observer_.on_checksum_mismatch) {
        observer_.on_checksum_mismatch(op);
      }
      return Status(KindFor(resp), msg, code);
    }
    const std::string reason = result.ok() ? std::to_string(result->status) : "connection";
    if (observer_.on_retry) observer_.on_retry(reason);
    LogWarn("azure request retry",
            {{"op", op},
             {"url", safe_url},
             {"reason", reason},
             {"attempt", attempt},
             {"delay_ms", delay->count()},
             {"error", result.ok() ? ErrorCode(*result) : result.status().message()}});
    if (!clock_.SleepFor(*delay, stop)) return Status(ErrorKind::kCancelled, op + " " + safe_url);
  }
}

Status BlobClient::CreateContainerIfMissing(std::stop_token stop) {
  HttpRequest req;
  req.method = "PUT";
  req.url = ContainerUrl() + "?restype=container";
  const std::string url = req.url;
  auto r = Execute(std::move(req), "CreateContainer", stop, {201, 403, 409});
  if (r.ok() && r->status == 403) {
    const std::string refused =
        "CreateContainer " + RedactUrl(url) + ": HTTP 403 " + ErrorCode(*r) + AuthDetail(*r);
    HttpRequest head;
    head.method = "HEAD";
    head.url = BlobUrl(".nbu-probe/container-check");
    auto seen = Execute(std::move(head), "GetProperties", stop, {200, 404});
    // Refused too: as first said. Any other failure (the container being deleted, storage out
    // of reach) is that failure, not a refusal, told after the refusal that led to it.
    if (!seen.ok()) {
      const Status& failed = seen.status();
      if (failed.kind() == ErrorKind::kAuth) return Status(ErrorKind::kAuth, refused);
      if (failed.kind() == ErrorKind::kCancelled) return failed;
      return Status(
          failed.kind(),
          refused + "; then the check that the container exists failed: " + failed.message(),
          failed.code());
    }
    // Only BlobNotFound (or the blob itself) shows the container is there: a bare 404 may come
    // from a wrong path or a proxy.
    if (seen->status == 404 && ErrorCode(*seen) != "BlobNotFound") {
      return Status(ErrorKind::kAuth,
                    refused +
                        ": the container may not exist (no BlobNotFound for a blob that "
                        "is not there), and these credentials may not create it");
    }
    LogInfo("these credentials may not create containers; the container exists",
            {{"container", options_.container}, {"error", refused}});
    return Status::Ok();
  }
  if (!r.ok()) return r.status();
  if (r->status == 409) {
    const std::string code = ErrorCode(*r);
    if (code == "ContainerAlreadyExists") return Status::Ok();
    // Recently deleted container names come back after a while: retry the step later.
    return Status(code == "ContainerBeingDeleted" ? ErrorKind::kTransient : ErrorKind::kConflict,
                  "CreateContainer " + RedactUrl(options_.endpoint) + "/" + options_.container +
                      ": HTTP 409 " + code,
                  code);
  }
  return Status::Ok();
}

HttpRequest BlobClient::PutBlobRequest(const std::string& blob_name, const Body& body,
                                       const BodyCheck& check, const BlobProperties& props) const {
  HttpRequest req;
  req.method = "PUT";
  req.url = BlobUrl(blob_name);
  req.SetHeader("x-ms-blob-type", "BlockBlob");
  AddProperties(req, props);
  if (check.md5) {
    req.SetHeader("Content-MD5", Base64Encode(*check.md5));
    // The stored MD5 of a single-shot blob is its body's (Azurite checks it against the body).
    req.SetHeader("x-ms-blob-content-md5", Base64Encode(props.content_md5.value_or(*check.md5)));
  } else {
    // Not with Content-MD5 (both at once are refused). Put Blob stores the MD5 of the body.
    req.SetHeader("x-ms-content-crc64", Crc64Base64(check.crc64));
  }
  SetBody(req, body);
  return req;
}

Status BlobClient::PutBlob(const std::string& blob_name, const Body& body, const BodyCheck& check,
                           const BlobProperties& props, std::stop_token stop) {
  if (Status s = ValidateProperties(props); !s.ok()) return s;
  auto r = Execute(PutBlobRequest(blob_name, body, check, props), "PutBlob", stop, {201},
                   /*writes_blob=*/true);
  if (!r.ok()) return r.status();
  const std::string crc64 = check.md5 ? "" : Crc64Base64(check.crc64);
  if (const std::string* echo = r->Header("x-ms-content-crc64");
      !check.md5 && echo != nullptr && *echo != crc64) {
    // Stored, yet not the bytes that were hashed: sent again by the next attempt.
    if (observer_.on_checksum_mismatch) observer_.on_checksum_mismatch("PutBlob");
    return Status(ErrorKind::kTransient, "PutBlob " + RedactUrl(BlobUrl(blob_name)) +
                                             ": storage computed CRC-64 " + Echoed(*echo) +
                                             " of the body, not the " + crc64 + " sent");
  }
  return Status::Ok();
}

Result<bool> BlobClient::ChecksCrc64(const std::string& probe_blob, std::stop_token stop) {
  auto r = Execute(
      PutBlobRequest(probe_blob, Body::FromMemory("a"), BodyCheck::Crc64(Crc64(0, "b", 1)), {}),
      "PutBlob", stop, {201, 400}, /*writes_blob=*/true);
  if (!r.ok()) return r.status();
  if (r->status == 201) {
    if (Status s = DeleteBlob(probe_blob, stop); !s.ok()) {
      LogWarn("cannot delete the CRC-64 probe blob", {{"error", s.ToString()}});
    }
    return false;
  }
  const std::string code = ErrorCode(*r);
  if (code == "Crc64Mismatch") return true;
  return Status(ErrorKind::kPermanent, "PutBlob " + RedactUrl(BlobUrl(probe_blob)) + ": HTTP 400 " +
                                           code + " (expected Crc64Mismatch)");
}

Status BlobClient::PutBlock(const std::string& blob_name, const std::string& block_id,
                            const Body& body, const Md5Digest& body_md5, std::stop_token stop) {
  if (Status s = CheckBlockId(block_id); !s.ok()) return s;
  HttpRequest req;
  req.method = "PUT";
  req.url = BlobUrl(blob_name) + "?comp=block&blockid=" + EncodedBlockId(block_id);
  req.SetHeader("Content-MD5", Base64Encode(body_md5));
  SetBody(req, body);
  return Execute(std::move(req), "PutBlock", stop, {201}, /*writes_blob=*/true).status();
}

Status BlobClient::PutBlockList(const std::string& blob_name,
                                const std::vector<std::string>& block_ids,
                                const BlobProperties& props, std::stop_token stop) {
  if (Status s = ValidateProperties(props); !s.ok()) return s;
  std::string xml = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<BlockList>";
  for (const std::string& id : block_ids) {
    if (Status s = CheckBlockId(id); !s.ok()) return s;
    xml += "<Latest>" + Base64Encode(id) + "</Latest>";
  }
  xml += "</BlockList>";
  HttpRequest req;
  req.method = "PUT";
  req.url = BlobUrl(blob_name) + "?comp=blocklist";
  req.SetHeader("Content-MD5", Base64Encode(Md5::Of(xml)));
  AddProperties(req, props);
  req.body = std::move(xml);
  return Execute(std::move(req), "PutBlockList", stop, {201}, /*writes_blob=*/true).status();
}

Result<std::optional<BlobInfo>> BlobClient::GetProperties(const std::string& blob_name,
                                                          std::stop_token stop) {
  HttpRequest req;
  req.method = "HEAD";
  req.url = BlobUrl(blob_name);
  auto r = Execute(std::move(req), "GetProperties", stop, {200});
  if (!r.ok()) {
    if (r.status().kind() == ErrorKind::kNotFound) return std::optional<BlobInfo>();
    return r.status();
  }
  BlobInfo info;
  if (const std::string* len = r->Header("content-length")) {
    const auto [p, ec] = std::from_chars(len->data(), len->data() + len->size(), info.size);
    if (ec != std::errc()) info.size = 0;
  }
  if (const std::string* md5 = r->Header("content-md5")) {
    if (auto raw = Base64Decode(*md5); raw && raw->size() == 16) {
      Md5Digest d{};
      std::copy(raw->begin(), raw->end(), d.begin());
      info.content_md5 = d;
    }
  }
  if (const std::string* etag = r->Header("etag")) info.etag = *etag;
  for (const auto& [name, value] : r->headers) {
    if (name.rfind("x-ms-meta-", 0) == 0) info.metadata[name.substr(10)] = value;
  }
  return std::optional<BlobInfo>(std::move(info));
}

Result<std::vector<BlockInfo>> BlobClient::GetUncommittedBlocks(const std::string& blob_name,
                                                                std::stop_token stop) {
  HttpRequest req;
  req.method = "GET";
  req.url = BlobUrl(blob_name) + "?comp=blocklist&blocklisttype=uncommitted";
  // A blob may hold 100,000 uncommitted blocks (two versions' worth of a 50,000-block file after
  // two crashes): about 8.3 MB of XML with this service's 23-byte ids, 14 MB with the longest
  // ids another writer may use. Past the transport's 4 MiB, a resume would send every block.
  req.max_response_body = 16 << 20;
  auto r = Execute(std::move(req), "GetBlockList", stop, {200});
  if (!r.ok()) {
    // No blob and no staged blocks under that name: nothing to resume.
    if (r.status().kind() == ErrorKind::kNotFound) return std::vector<BlockInfo>();
    return r.status();
  }
  const std::string& xml = r->body;
  // Tolerant scan: only the <UncommittedBlocks> section if present, else the whole body.
  size_t begin = xml.find("<UncommittedBlocks>");
  size_t end = begin == std::string::npos ? std::string::npos : xml.find("</UncommittedBlocks>");
  if (begin == std::string::npos || end == std::string::npos) {
    begin = 0;
    end = xml.size();
  }
  std::vector<BlockInfo> blocks;
  size_t pos = begin;
  while (auto block = XmlElement(xml, "Block", pos, end, &pos)) {
    BlockInfo b;
    const std::string name = XmlElement(*block, "Name", 0, block->size()).value_or("");
    b.id = Base64Decode(name).value_or(name);
    const std::string size = XmlElement(*block, "Size", 0, block->size()).value_or("0");
    const auto [p, ec] = std::from_chars(size.data(), size.data() + size.size(), b.size);
    if (ec != std::errc()) b.size = 0;
    blocks.push_back(std::move(b));
  }
  return blocks;
}

Result<std::string> BlobClient::GetBlob(const std::string& blob_name, std::stop_token stop) {
  HttpRequest req;
  req.method = "GET";
  req.url = BlobUrl(blob_name);
  auto r = Execute(std::move(req), "GetBlob", stop, {200});
  if (!r.ok()) return r.status();
  return std::move(r->body);
}

Result<std::vector<std::string>> BlobClient::ListBlobNames(const std::string& prefix, int page_size,
                                                           std::stop_token stop) {
  std::vector<std::string> names;
  std::string marker;
  do {
    HttpRequest req;
    req.method = "GET";
    req.url = ContainerUrl() +
              "?restype=container&comp=list&maxresults=" + std::to_string(page_size) +
              "&prefix=" + UrlEncodeQueryValue(prefix) +
              (marker.empty() ? "" : "&marker=" + UrlEncodeQueryValue(marker));
    // Each entry holds the blob's properties too, and a page up to 5,000 entries: it can pass
    // the transport's 4 MiB.
    req.max_response_body = 16 << 20;
    auto r = Execute(std::move(req), "ListBlobs", stop, {200}, /*writes_blob=*/false,
                     /*observed=*/false);
    if (!r.ok()) return r.status();
    const std::string& xml = r->body;
    size_t pos = 0;
    while (auto blob = XmlElement(xml, "Blob", pos, xml.size(), &pos)) {
      std::string attributes;
      const auto name = XmlElement(*blob, "Name", 0, blob->size(), nullptr, &attributes);
      if (!name) {
        return Status(ErrorKind::kPermanent, "ListBlobs: a <Blob> without a <Name> in the answer");
      }
      // A name that XML cannot carry (a control character) comes percent-encoded.
      names.push_back(attributes.find("Encoded=\"true\"") == std::string::npos
                          ? XmlUnescape(*name)
                          : UrlDecode(XmlUnescape(*name)));
    }
    std::string next = XmlUnescape(XmlElement(xml, "NextMarker", 0, xml.size()).value_or(""));
    if (!next.empty() && next == marker) {
      return Status(ErrorKind::kPermanent, "ListBlobs: the listing did not move past its marker");
    }
    marker = std::move(next);
  } while (!marker.empty());
  return names;
}

Status BlobClient::DeleteBlob(const std::string& blob_name, std::stop_token stop) {
  HttpRequest req;
  req.method = "DELETE";
  req.url = BlobUrl(blob_name);
  const std::string url = RedactUrl(req.url);
  // Only the start-up probes delete, and a SAS may allow uploads but not deletes.
  auto r = Execute(std::move(req), "DeleteBlob", stop, {202, 404}, /*writes_blob=*/false,
                   /*observed=*/false);
  if (!r.ok()) return r.status();
  // Gone already is done: a retry of a delete that landed, its answer lost, finds it so. Only
  // BlobNotFound says it: a bare 404 may come from a wrong path or a proxy.
  if (r->status == 404 && ErrorCode(*r) != "BlobNotFound") {
    return Status(ErrorKind::kNotFound, "DeleteBlob " + url + ": HTTP 404 without BlobNotFound");
  }
  return Status::Ok();
}

}  // namespace nbu::azure
