#include "telemetry/otlp_config.h"
#include "util/text.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

namespace nbu::telemetry {
namespace {

std::string Trim(const std::string& s) {
  const auto begin = s.find_first_not_of(" \t");
  if (begin == std::string::npos) return "";
  const auto end = s.find_last_not_of(" \t");
  return s.substr(begin, end - begin + 1);
}

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Reads one variable; unset and empty (after trimming) are both "not configured".
struct Reader {
  const EnvLookup& env;
  TelemetryConfigResult& result;

  std::optional<std::string> Get(const std::string& name) const {
    auto v = env(name);
    if (!v) return std::nullopt;
    std::string t = Trim(*v);
    if (t.empty()) return std::nullopt;
    return t;
  }

  void Error(const std::string& name, const std::string& what) const {
    result.errors.push_back(name + ": " + what);
  }

  // Non-negative integer within [min, max]; leaves *out unchanged when unset or invalid.
  template <typename T>
  void Integer(const std::string& name, long long min, long long max, T* out) const {
    const auto v = Get(name);
    if (!v) return;
    long long n = 0;
    const auto res = std::from_chars(v->data(), v->data() + v->size(), n);
    if (res.ec != std::errc() || res.ptr != v->data() + v->size() || n < min || n > max) {
      Error(name, "must be an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                      ", got \"" + *v + "\"");
      return;
    }
    *out = static_cast<T>(n);
  }

  void Millis(const std::string& name, long long min, std::chrono::milliseconds* out) const {
    long long ms = out->count();
    Integer(name, min, 24LL * 3600 * 1000, &ms);
    *out = std::chrono::milliseconds(ms);
  }

  // An http(s) URL with a host; nullopt (and one error) otherwise.
  std::optional<std::string> Url(const std::string& name) const {
    const auto v = Get(name);
    if (!v) return std::nullopt;
    const std::string lower = LowerAscii(*v);
    const bool scheme = lower.rfind("http://", 0) == 0 || lower.rfind("https://", 0) == 0;
    const auto host_at = v->find("://");
    if (!scheme || host_at + 3 >= v->size() || (*v)[host_at + 3] == '/' ||
        v->find_first_of(" \t\r\n") != std::string::npos) {
      // Echoed only without an '@': user info whose password holds a '/' would pass for a path.
      Error(name, "must be an http:// or https:// URL with a host" +
                      (v->find('@') == std::string::npos
                           ? ", got \"" + EndpointForLog(*v) + "\""
                           : std::string(" (not shown: it holds user info)")));
      return std::nullopt;
    }
    // An '@' in the path is user info whose password holds a '/' ("https://u:Ab/cd@host"): curl
    // takes "u" for the host, and the log would show the password as the path. Not echoed.
    const std::string_view rest = std::string_view(*v).substr(host_at + 3);
    const std::string_view path = rest.substr(0, rest.find_first_of("?#"));
    if (path.find('/') != std::string_view::npos &&
        path.substr(path.find('/')).find('@') != std::string_view::npos) {
      Error(name, "has '@' in its path: write a '/' in a password as %2F");
      return std::nullopt;
    }
    return *v;
  }
};

// The signal's path after the base URL's own path, and before its query (a gateway's key, say)
// and fragment, which follow it as given.
std::string JoinPath(const std::string& base, const std::string& path) {
  const size_t rest = std::min(base.find('?'), base.find('#'));
  std::string out = base.substr(0, rest);
  while (!out.empty() && out.back() == '/') out.pop_back();
  return out + path + (rest == std::string::npos ? "" : base.substr(rest));
}

void ParseEndpoints(const Reader& r, TelemetryConfig& c) {
  const auto base = r.Url("OTEL_EXPORTER_OTLP_ENDPOINT");
  if (base) {
    c.traces_url = JoinPath(*base, "/v1/traces");
    c.metrics_url = JoinPath(*base, "/v1/metrics");
  }
  if (auto t = r.Url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) c.traces_url = *t;
  if (auto m = r.Url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")) c.metrics_url = *m;
  // OTEL_{TRACES,METRICS}_EXPORTER: "otlp" (default) or "none".
  for (const auto& [name, url] : {std::pair{"OTEL_TRACES_EXPORTER", &c.traces_url},
                                  std::pair{"OTEL_METRICS_EXPORTER", &c.metrics_url}}) {
    const auto v = r.Get(name);
    if (!v || LowerAscii(*v) == "otlp") continue;
    if (LowerAscii(*v) == "none")
      url->clear();
    else
      r.Error(name, "only \"otlp\" and \"none\" are supported, got \"" + *v + "\"");
  }
  const auto protocol = r.Get("OTEL_EXPORTER_OTLP_PROTOCOL");
  if (protocol && *protocol != "http/json") {
    if (*protocol == "http/protobuf") {
      r.result.warnings.push_back(
          "OTEL_EXPORTER_OTLP_PROTOCOL: http/protobuf requested; sending OTLP/HTTP JSON, which "
          "OTLP/HTTP receivers accept on the same endpoint");
    } else {
      r.Error("OTEL_EXPORTER_OTLP_PROTOCOL",
              "only http/json (OTLP/HTTP) is supported, got \"" + *protocol + "\"");
    }
  }
}

void ParseResource(const Reader& r, TelemetryConfig& c) {
  if (auto attrs = r.Get("OTEL_RESOURCE_ATTRIBUTES")) {
    std::vector<std::string> errors;
    auto kv = ParseKeyValueList(*attrs, &errors);
    for (const std::string& e : errors) r.Error("OTEL_RESOURCE_ATTRIBUTES", e);
    if (kv) {
      for (auto& [k, v] : *kv) {
        if (k == "service.name")
          c.service_name = v;  // OTEL_SERVICE_NAME below wins
        else
          c.resource_attributes.emplace_back(std::move(k), std::move(v));
      }
    }
  }
  if (auto name = r.Get("OTEL_SERVICE_NAME")) c.service_name = *name;
}

// Header names must be HTTP tokens and values must not smuggle in line breaks. An error never
// quotes a value (values carry API keys), nor a name that is not a token: a header written as
// HTTP writes it ("Authorization: Basic dXNl...==") has its secret in what parses as the name.
// One error line per bad entry.
bool ValidHeaders(const KeyValues& headers, std::vector<std::string>* errors) {
  static const std::string kTokenPunct = "!#$%&'*+-.^_`|~";
  const size_t before = errors->size();
  size_t index = 0;
  for (const auto& [name, value] : headers) {
    ++index;
    if (!std::all_of(name.begin(), name.end(), [](char ch) {
          return std::isalnum(static_cast<unsigned char>(ch)) ||
                 kTokenPunct.find(ch) != std::string::npos;
        })) {
      errors->push_back(
          "entry " + std::to_string(index) +
          ": the header name is not a valid HTTP token (write name=value, not name: value)");
    } else if (value.find_first_of("\r\n") != std::string::npos ||
               value.find('\0') != std::string::npos) {
      errors->push_back("value of header \"" + name + "\" contains a line break or NUL");
    }
  }
  return errors->size() == before;
}

void ParseDisabled(const Reader& r, TelemetryConfig& c) {
  const auto v = r.Get("OTEL_SDK_DISABLED");
  if (!v) return;
  // Per the OTel spec only a case-insensitive "true" is true; other values mean false + warning.
  const std::string lower = LowerAscii(*v);
  c.sdk_disabled = lower == "true";
  if (lower != "true" && lower != "false") {
    r.result.warnings.push_back("OTEL_SDK_DISABLED: \"" + *v +
                                "\" is neither true nor false; treated as false");
  }
}

}  // namespace

std::optional<std::string> PercentDecode(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    const int hi = HexDigit(text[i + 1]);
    const int lo = HexDigit(text[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

std::optional<KeyValues> ParseKeyValueList(const std::string& text,
                                           std::vector<std::string>* errors) {
  const size_t before = errors->size();
  KeyValues out;
  size_t start = 0;
  for (size_t index = 1; start <= text.size(); ++index) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string entry = text.substr(start, end - start);
    start = end + 1;
    if (Trim(entry).empty()) {
      if (end == text.size()) break;  // tolerate a trailing comma
      errors->push_back("entry " + std::to_string(index) + " is empty");
      continue;
    }
    const auto eq = entry.find('=');
    const std::string key = eq == std::string::npos ? "" : Trim(entry.substr(0, eq));
    if (eq == std::string::npos || key.empty()) {
      errors->push_back("entry " + std::to_string(index) + " is not key=value");
      continue;
    }
    auto value = PercentDecode(Trim(entry.substr(eq + 1)));
    if (!value) {
      errors->push_back("entry " + std::to_string(index) + " has a malformed percent-encoding");
      continue;
    }
    out.emplace_back(key, std::move(*value));
  }
  if (errors->size() != before) return std::nullopt;
  return out;
}

std::string EndpointForLog(const std::string& url) {
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string::npos) return "<unparsable url>";
  std::string out = url;
  if (const auto user = UserInfoSpan(out)) out.erase(user->first, user->second - user->first);
  out.resize(std::min(out.find_first_of("?#", scheme_end + 3), out.size()));
  return out;
}

TelemetryConfigResult ParseTelemetryConfig(const EnvLookup& env) {
  TelemetryConfigResult result;
  TelemetryConfig& c = result.config;
  const Reader r{env, result};
  ParseDisabled(r, c);
  ParseEndpoints(r, c);
  ParseResource(r, c);
  if (auto headers = r.Get("OTEL_EXPORTER_OTLP_HEADERS")) {
    std::vector<std::string> errors;
    auto kv = ParseKeyValueList(*headers, &errors);
    if (kv && ValidHeaders(*kv, &errors)) c.headers = std::move(*kv);
    for (const std::string& e : errors) r.Error("OTEL_EXPORTER_OTLP_HEADERS", e);
  }
  r.Millis("OTEL_METRIC_EXPORT_INTERVAL", 1, &c.metric_export_interval);
  r.Millis("OTEL_BSP_SCHEDULE_DELAY", 1, &c.span_schedule_delay);
  r.Millis("OTEL_EXPORTER_OTLP_TIMEOUT", 1, &c.export_timeout);
  r.Integer("OTEL_BSP_MAX_QUEUE_SIZE", 1, 1'000'000, &c.max_queue_size);
  r.Integer("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 1, 1'000'000, &c.max_export_batch_size);
  if (c.max_export_batch_size > c.max_queue_size) {
    // The spec requires batch <= queue; clamp rather than fail, as SDKs do.
    c.max_export_batch_size = c.max_queue_size;
  }
  return result;
}

TelemetryConfigResult TelemetryConfigFromEnvironment() {
  return ParseTelemetryConfig([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): start-up only
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace nbu::telemetry
