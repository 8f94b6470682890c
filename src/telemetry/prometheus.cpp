#include "telemetry/prometheus.h"

#include <charconv>
#include <cmath>
#include <set>

namespace nbu::telemetry {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool IsNameChar(char c, bool allow_colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         (allow_colon && c == ':');
}

std::string Sanitize(const std::string& name, bool allow_colon) {
  std::string out;
  out.reserve(name.size() + 1);
  for (char c : name) out += IsNameChar(c, allow_colon) ? c : '_';
  if (out.empty() || (out[0] >= '0' && out[0] <= '9')) out.insert(out.begin(), '_');
  return out;
}

std::string UnitSuffix(const std::string& unit) {
  if (unit == "s") return "_seconds";
  if (unit == "By") return "_bytes";
  return "";
}

// HELP text escapes backslash and newline; label values also escape the double quote.
std::string Escape(const std::string& text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (quote && c == '"')
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

// `{k="v",le="0.5"}`; empty string when there are no labels.
std::string Labels(const Attributes& attrs, const std::string* le = nullptr) {
  if (attrs.empty() && le == nullptr) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : attrs) {
    if (!first) out += ',';
    first = false;
    out += Sanitize(key, false) + "=\"" + Escape(value, true) + "\"";
  }
  if (le != nullptr) out += std::string(first ? "" : ",") + "le=\"" + *le + "\"";
  return out + "}";
}

void Header(std::string& out, const std::string& name, const InstrumentInfo& info,
            const char* type) {
  if (!info.description.empty()) {
    out += "# HELP " + name + " " + Escape(info.description, false) + "\n";
  }
  out += "# TYPE " + name + " " + type + "\n";
}

void Sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  out += name + labels + " " + FormatPrometheusValue(value) + "\n";
}

void RenderHistogram(std::string& out, const std::string& name, const Attributes& attrs,
                     const HistogramPoint& p) {
  uint64_t cumulative = 0;
  for (size_t i = 0; i < p.bounds.size() && i < p.counts.size(); ++i) {
    cumulative += p.counts[i];
    const std::string le = FormatPrometheusValue(p.bounds[i]);
    Sample(out, name + "_bucket", Labels(attrs, &le), static_cast<double>(cumulative));
  }
  const std::string inf = "+Inf";
  Sample(out, name + "_bucket", Labels(attrs, &inf), static_cast<double>(p.count));
  Sample(out, name + "_sum", Labels(attrs), p.sum);
  Sample(out, name + "_count", Labels(attrs), static_cast<double>(p.count));
}

}  // namespace

std::string PrometheusName(const InstrumentInfo& info) {
  std::string name = Sanitize(info.name, true);
  const bool counter = info.kind == InstrumentKind::kCounter;
  if (counter && EndsWith(name, "_total")) name.resize(name.size() - 6);
  const std::string unit = UnitSuffix(info.unit);
  if (!unit.empty() && !EndsWith(name, unit)) name += unit;
  if (counter) name += "_total";
  return name;
}

std::string FormatPrometheusValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), value);
  return std::string(buf, res.ptr);
}

std::string RenderPrometheus(const MetricsRegistry& registry) {
  std::string out;
  std::set<std::string> seen;
  for (const Counter* c : registry.Counters()) {
    const std::string name = PrometheusName(c->info());
    if (!seen.insert(name).second) continue;
    const bool mono = c->info().kind == InstrumentKind::kCounter;
    Header(out, name, c->info(), mono ? "counter" : "gauge");
    for (const auto& [attrs, value] : c->Series()) Sample(out, name, Labels(attrs), value);
  }
  for (const Histogram* h : registry.Histograms()) {
    const std::string name = PrometheusName(h->info());
    if (!seen.insert(name).second) continue;
    Header(out, name, h->info(), "histogram");
    for (const auto& [attrs, point] : h->Series()) RenderHistogram(out, name, attrs, point);
  }
  for (const Gauge& g : registry.Gauges()) {
    const std::string name = PrometheusName(g.info);
    if (!seen.insert(name).second) continue;
    double value = 0;
    try {
      value = g.read();
    } catch (...) {
      continue;  // a broken callback must not break the scrape
    }
    Header(out, name, g.info, "gauge");
    Sample(out, name, "", value);
  }
  return out;
}

}  // namespace nbu::telemetry
