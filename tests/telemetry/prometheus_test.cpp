// RenderPrometheus, read back by a scraper-style parser of the 0.0.4 text format.
#include "telemetry/prometheus.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <regex>
#include <sstream>
#include <stdexcept>

namespace nbu::telemetry {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Scrape {
  std::map<std::string, std::string> help;  // family -> unescaped text
  std::map<std::string, std::string> type;  // family -> counter|gauge|histogram|...
  std::vector<Sample> samples;
  std::vector<std::string> family_of_sample;  // which TYPE line each sample belongs to

  std::vector<Sample> Find(const std::string& name) const {
    std::vector<Sample> out;
    for (const auto& s : samples)
      if (s.name == name) out.push_back(s);
    return out;
  }
};

std::string Unescape(const std::string& s, bool quote) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) throw std::runtime_error("dangling backslash");
    if (s[i] == 'n')
      out += '\n';
    else if (s[i] == '\\')
      out += '\\';
    else if (quote && s[i] == '"')
      out += '"';
    else
      throw std::runtime_error("bad escape");
  }
  return out;
}

double ParseValue(const std::string& v) {
  if (v == "+Inf") return INFINITY;
  if (v == "-Inf") return -INFINITY;
  if (v == "NaN") return NAN;
  size_t used = 0;
  const double d = std::stod(v, &used);
  if (used != v.size()) throw std::runtime_error("bad value " + v);
  return d;
}

// Parses `{a="x",b="y"}` starting at text[pos] == '{'; returns the position after '}'.
size_t ParseLabels(const std::string& text, size_t pos, std::map<std::string, std::string>* out) {
  static const std::regex kLabelName("[a-zA-Z_][a-zA-Z0-9_]*");
  ++pos;
  while (pos < text.size() && text[pos] != '}') {
    const size_t eq = text.find('=', pos);
    const std::string name = text.substr(pos, eq - pos);
    if (!std::regex_match(name, kLabelName)) throw std::runtime_error("bad label " + name);
    if (text.at(eq + 1) != '"') throw std::runtime_error("label value not quoted");
    size_t i = eq + 2;
    std::string raw;
    while (text.at(i) != '"') {
      if (text[i] == '\\') raw += text[i++];
      raw += text.at(i++);
    }
    if (out->count(name)) throw std::runtime_error("duplicate label " + name);
    (*out)[name] = Unescape(raw, true);
    pos = i + 1;
    if (text.at(pos) == ',') ++pos;
  }
  if (pos >= text.size()) throw std::runtime_error("unterminated labels");
  return pos + 1;
}

// The family a sample belongs to: histograms own _bucket/_sum/_count.
std::string FamilyOf(const Scrape& s, const std::string& name) {
  if (s.type.count(name)) return name;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    const std::string sf = suffix;
    if (name.size() > sf.size() && name.compare(name.size() - sf.size(), sf.size(), sf) == 0) {
      const std::string base = name.substr(0, name.size() - sf.size());
      if (s.type.count(base) && s.type.at(base) == "histogram") return base;
    }
  }
  throw std::runtime_error("sample without TYPE: " + name);
}

Scrape Parse(const std::string& text) {
  static const std::regex kMetricName("[a-zA-Z_:][a-zA-Z0-9_:]*");
  Scrape s;
  if (!text.empty() && text.back() != '\n') throw std::runtime_error("no final newline");
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const size_t sp = line.find(' ', 7);
      const std::string name = line.substr(7, sp - 7);
      if (!std::regex_match(name, kMetricName)) throw std::runtime_error("bad name " + name);
      const std::string rest = sp == std::string::npos ? "" : line.substr(sp + 1);
      auto& map = line[2] == 'H' ? s.help : s.type;
      if (map.count(name)) throw std::runtime_error("repeated comment for " + name);
      if (line[2] == 'T' && !s.Find(name).empty()) throw std::runtime_error("TYPE after sample");
      map[name] = line[2] == 'H' ? Unescape(rest, false) : rest;
      continue;
    }
    if (line[0] == '#') continue;
    Sample sample;
    size_t pos = line.find_first_of("{ ");
    sample.name = line.substr(0, pos);
    if (!std::regex_match(sample.name, kMetricName)) throw std::runtime_error("bad " + sample.name);
    if (line.at(pos) == '{') pos = ParseLabels(line, pos, &sample.labels);
    if (line.at(pos) != ' ') throw std::runtime_error("no space before value");
    sample.value = ParseValue(line.substr(pos + 1));
    s.family_of_sample.push_back(FamilyOf(s, sample.name));
    s.samples.push_back(std::move(sample));
  }
  return s;
}

TEST(PrometheusNameTest, MapsOtelNamesAndUnits) {
  using K = InstrumentKind;
  EXPECT_EQ(PrometheusName({"files.processed", "", "1", K::kCounter}), "files_processed_total");
  EXPECT_EQ(PrometheusName({"upload.duration", "", "s", K::kHistogram}), "upload_duration_seconds");
  EXPECT_EQ(PrometheusName({"file.size", "", "By", K::kHistogram}), "file_size_bytes");
  EXPECT_EQ(PrometheusName({"bytes.uploaded", "", "By", K::kCounter}),
            "bytes_uploaded_bytes_total");
  EXPECT_EQ(PrometheusName({"upload_seconds", "", "s", K::kHistogram}), "upload_seconds");
  EXPECT_EQ(PrometheusName({"requests_total", "", "1", K::kCounter}), "requests_total");
  EXPECT_EQ(PrometheusName({"queue.depth", "", "1", K::kUpDownCounter}), "queue_depth");
  EXPECT_EQ(PrometheusName({"9lives-x", "", "", K::kGauge}), "_9lives_x");
}

TEST(PrometheusFormatTest, Values) {
  EXPECT_EQ(FormatPrometheusValue(0.1), "0.1");
  EXPECT_EQ(FormatPrometheusValue(3), "3");
  EXPECT_EQ(FormatPrometheusValue(INFINITY), "+Inf");
  EXPECT_EQ(FormatPrometheusValue(-INFINITY), "-Inf");
  EXPECT_EQ(FormatPrometheusValue(NAN), "NaN");
}

class PrometheusRenderTest : public ::testing::Test {
 protected:
  MetricsRegistry registry_;
};

TEST_F(PrometheusRenderTest, CountersGaugesAndHelp) {
  auto& processed = registry_.AddCounter("files.processed", "Files uploaded\nand committed", "1");
  processed.Add(3, {{"container", "raw"}});
  processed.Add(2, {{"container", "cooked"}});
  auto& depth = registry_.AddCounter("queue.depth", "Files waiting", "1", /*up_down=*/true);
  depth.Add(5);
  depth.Add(-2);
  registry_.AddGauge("oldest.pending.age", "Age of the oldest file", "s", [] { return 12.5; });

  const Scrape s = Parse(RenderPrometheus(registry_));
  EXPECT_EQ(s.type.at("files_processed_total"), "counter");
  EXPECT_EQ(s.help.at("files_processed_total"), "Files uploaded\nand committed");
  const auto processed_samples = s.Find("files_processed_total");
  ASSERT_EQ(processed_samples.size(), 2u);
  double total = 0;
  for (const auto& p : processed_samples) total += p.value;
  EXPECT_EQ(total, 5);
  EXPECT_EQ(s.type.at("queue_depth"), "gauge");
  ASSERT_EQ(s.Find("queue_depth").size(), 1u);
  EXPECT_EQ(s.Find("queue_depth")[0].value, 3);
  EXPECT_EQ(s.type.at("oldest_pending_age_seconds"), "gauge");
  EXPECT_EQ(s.Find("oldest_pending_age_seconds").at(0).value, 12.5);
}

TEST_F(PrometheusRenderTest, LabelValuesAreEscapedAndRoundTrip) {
  const std::string nasty = "C:\\dir \"quoted\"\nnext line";
  registry_.AddCounter("files.failed", "Failures", "1")
      .Add(1, {{"reason", nasty}, {"bad-key", "x"}});
  const std::string text = RenderPrometheus(registry_);
  EXPECT_NE(text.find(R"(reason="C:\\dir \"quoted\"\nnext line")"), std::string::npos) << text;
  const Scrape s = Parse(text);
  const auto samples = s.Find("files_failed_total");
  ASSERT_EQ(samples.size(), 1u);
  EXPECT_EQ(samples[0].labels.at("reason"), nasty);
  EXPECT_EQ(samples[0].labels.at("bad_key"), "x");
}

TEST_F(PrometheusRenderTest, HistogramBucketsAreCumulativeAndEndInInf) {
  auto& h = registry_.AddHistogram("upload.duration", "Upload time", "s", {0.1, 1, 10});
  for (double v : {0.05, 0.1, 0.5, 2.0, 3.0, 50.0}) h.Record(v, {{"tier", "hot"}});
  h.Record(0.2, {{"tier", "cool"}});

  const Scrape s = Parse(RenderPrometheus(registry_));
  EXPECT_EQ(s.type.at("upload_duration_seconds"), "histogram");
  std::map<std::string, std::vector<std::pair<double, double>>> buckets;  // tier -> (le, count)
  for (const auto& b : s.Find("upload_duration_seconds_bucket")) {
    buckets[b.labels.at("tier")].emplace_back(ParseValue(b.labels.at("le")), b.value);
  }
  const auto& hot = buckets.at("hot");
  ASSERT_EQ(hot.size(), 4u);
  const std::vector<std::pair<double, double>> expected = {
      {0.1, 2}, {1, 3}, {10, 5}, {INFINITY, 6}};  // le is inclusive: 0.1 lands in le="0.1"
  EXPECT_EQ(hot, expected);
  for (const auto& [tier, series] : buckets) {
    for (size_t i = 1; i < series.size(); ++i) {
      EXPECT_LT(series[i - 1].first, series[i].first);
      EXPECT_LE(series[i - 1].second, series[i].second) << "not cumulative";
    }
    double count = -1;
    for (const auto& c : s.Find("upload_duration_seconds_count"))
      if (c.labels.at("tier") == tier) count = c.value;
    EXPECT_EQ(series.back().first, INFINITY);
    EXPECT_EQ(series.back().second, count) << "+Inf bucket must equal _count";
  }
  std::vector<double> hot_sums;
  for (const auto& sum : s.Find("upload_duration_seconds_sum")) {
    if (sum.labels.count("tier") > 0 && sum.labels.at("tier") == "hot") {
      hot_sums.push_back(sum.value);
    }
  }
  ASSERT_EQ(hot_sums.size(), 1u) << "upload_duration_seconds_sum{tier=\"hot\"}";
  EXPECT_DOUBLE_EQ(hot_sums[0], 55.65);
}

TEST_F(PrometheusRenderTest, FileSizeHistogramInBytes) {
  registry_.AddHistogram("file.size", "Size", "By", {1024, 1048576}).Record(2048);
  const Scrape s = Parse(RenderPrometheus(registry_));
  EXPECT_EQ(s.type.at("file_size_bytes"), "histogram");
  const auto buckets = s.Find("file_size_bytes_bucket");
  ASSERT_EQ(buckets.size(), 3u);
  EXPECT_EQ(buckets[0].labels.at("le"), "1024");
  EXPECT_EQ(buckets[2].labels.at("le"), "+Inf");
  EXPECT_EQ(buckets[2].value, 1);
}

TEST_F(PrometheusRenderTest, DuplicateNamesAndThrowingGaugesAreSkipped) {
  registry_.AddCounter("dup", "first", "1").Add(1);
  registry_.AddCounter("dup", "second", "1").Add(2);
  registry_.AddGauge("broken", "throws", "1", []() -> double { throw std::runtime_error("x"); });
  const Scrape s = Parse(RenderPrometheus(registry_));
  EXPECT_EQ(s.help.at("dup_total"), "first");
  EXPECT_EQ(s.Find("dup_total").size(), 1u);
  EXPECT_EQ(s.type.count("broken"), 0u);
}

TEST_F(PrometheusRenderTest, EmptyRegistryRendersNothing) {
  EXPECT_EQ(RenderPrometheus(registry_), "");
}

}  // namespace
}  // namespace nbu::telemetry
