// OTEL_* environment parsing: endpoints, headers, resource attributes, numbers, error lines.
#include "telemetry/otlp_config.h"

#include <gtest/gtest.h>

#include <map>

namespace nbu::telemetry {
namespace {

TelemetryConfigResult ParseEnv(const std::map<std::string, std::string>& vars) {
  return ParseTelemetryConfig([&](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

TEST(TelemetryConfigTest, DefaultsWithNothingSet) {
  const auto r = ParseEnv({});
  EXPECT_TRUE(r.errors.empty());
  EXPECT_FALSE(r.config.exports_traces());
  EXPECT_FALSE(r.config.exports_metrics());
  EXPECT_EQ(r.config.service_name, "nfs-blob-uploader");
  EXPECT_EQ(r.config.metric_export_interval, std::chrono::milliseconds(60000));
  EXPECT_EQ(r.config.span_schedule_delay, std::chrono::milliseconds(5000));
  EXPECT_EQ(r.config.max_queue_size, 2048u);
}

TEST(TelemetryConfigTest, BaseEndpointGetsSignalPaths) {
  const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"}});
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.traces_url, "http://collector:4318/v1/traces");
  EXPECT_EQ(r.config.metrics_url, "http://collector:4318/v1/metrics");
  const auto with_path = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://h/otlp"}});
  EXPECT_EQ(with_path.config.traces_url, "https://h/otlp/v1/traces");
  // A query stays after the path (it was put after the query, which made the path part of it).
  const auto with_query = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://h/otlp/?key=k1"}});
  EXPECT_EQ(with_query.config.traces_url, "https://h/otlp/v1/traces?key=k1");
  EXPECT_EQ(with_query.config.metrics_url, "https://h/otlp/v1/metrics?key=k1");
  EXPECT_EQ(ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://h:4318?k=1#f"}}).config.traces_url,
            "http://h:4318/v1/traces?k=1#f");
  EXPECT_EQ(ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://h/#f"}}).config.traces_url,
            "https://h/v1/traces#f");
}

TEST(TelemetryConfigTest, SignalEndpointsAreUsedAsIs) {
  const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"},
                           {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:1/custom"},
                           {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:2/"}});
  EXPECT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.traces_url, "http://t:1/custom");
  EXPECT_EQ(r.config.metrics_url, "http://m:2/");
  const auto only_metrics = ParseEnv({{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:2/x"}});
  EXPECT_FALSE(only_metrics.config.exports_traces());
  EXPECT_TRUE(only_metrics.config.exports_metrics());
}

TEST(TelemetryConfigTest, SdkDisabledAndExporterNone) {
  const auto off =
      ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}, {"OTEL_SDK_DISABLED", "TRUE"}});
  EXPECT_TRUE(off.errors.empty());
  EXPECT_FALSE(off.config.exports_traces());
  EXPECT_FALSE(off.config.exports_metrics());
  const auto odd =
      ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}, {"OTEL_SDK_DISABLED", "yes"}});
  EXPECT_TRUE(odd.errors.empty());
  EXPECT_EQ(odd.warnings.size(), 1u);
  EXPECT_TRUE(odd.config.exports_traces());
  const auto none = ParseEnv(
      {{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"}, {"OTEL_TRACES_EXPORTER", "none"}});
  EXPECT_FALSE(none.config.exports_traces());
  EXPECT_TRUE(none.config.exports_metrics());
}

TEST(TelemetryConfigTest, HeadersArePercentDecoded) {
  const auto r =
      ParseEnv({{"OTEL_EXPORTER_OTLP_HEADERS",
                 "api-key=s3cr%3Dt%2C, x-tenant = acme%20corp ,Authorization=Basic%20abc"}});
  ASSERT_TRUE(r.errors.empty()) << r.errors[0];
  const KeyValues expected = {
      {"api-key", "s3cr=t,"}, {"x-tenant", "acme corp"}, {"Authorization", "Basic abc"}};
  EXPECT_EQ(r.config.headers, expected);
}

TEST(TelemetryConfigTest, BadHeadersGiveOneErrorWithoutTheSecret) {
  // The last three write a header as HTTP does ("name: value"): the secret is then in what
  // parses as the name, before the first '=' (base64 padding, say).
  for (const std::string bad : {"api-key=topsecret,novalue", "api-key=topsecret%zz",
                                "api key=topsecret", "a=topsecret%0d%0aX: y", "=topsecret",
                                "Authorization: Basic topsecret==", "api-key: topsecret=abc",
                                "Authorization: topsecret%zz=x"}) {
    const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_HEADERS", bad}});
    ASSERT_EQ(r.errors.size(), 1u) << bad;
    EXPECT_EQ(r.errors[0].rfind("OTEL_EXPORTER_OTLP_HEADERS: ", 0), 0u) << r.errors[0];
    EXPECT_EQ(r.errors[0].find("topsecret"), std::string::npos) << r.errors[0];
  }
}

TEST(TelemetryConfigTest, KeyValueListEdgeCases) {
  std::vector<std::string> errors;
  EXPECT_EQ(ParseKeyValueList("a=1,", &errors), (KeyValues{{"a", "1"}}));
  EXPECT_EQ(ParseKeyValueList("a=", &errors), (KeyValues{{"a", ""}}));
  EXPECT_EQ(ParseKeyValueList("a=b=c", &errors), (KeyValues{{"a", "b=c"}}));
  EXPECT_TRUE(errors.empty());
  EXPECT_FALSE(ParseKeyValueList("a=1,,b=2", &errors));
  EXPECT_EQ(errors, std::vector<std::string>{"entry 2 is empty"});
  // Every bad entry, a line each.
  errors.clear();
  EXPECT_FALSE(ParseKeyValueList("a=1,,novalue,c=%zz,d=4", &errors));
  EXPECT_EQ(errors, (std::vector<std::string>{"entry 2 is empty", "entry 3 is not key=value",
                                              "entry 4 has a malformed percent-encoding"}));
  const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_HEADERS", "a b=1,k=%zz,ok=1"}});
  EXPECT_EQ(r.errors, (std::vector<std::string>{
                          "OTEL_EXPORTER_OTLP_HEADERS: entry 2 has a malformed percent-encoding"}))
      << "the names are judged once every entry parses";
  const auto h = ParseEnv({{"OTEL_EXPORTER_OTLP_HEADERS", "a b=1,c=2,d:e=3"}});
  EXPECT_EQ(h.errors.size(), 2u) << testing::PrintToString(h.errors);
  EXPECT_EQ(PercentDecode("%41%2f"), "A/");
  EXPECT_FALSE(PercentDecode("%4"));
  EXPECT_FALSE(PercentDecode("%"));
}

TEST(TelemetryConfigTest, ResourceAttributesAndServiceName) {
  const auto r =
      ParseEnv({{"OTEL_RESOURCE_ATTRIBUTES",
                 "deployment.environment=prod,service.name=from-attrs,host.name=nfs%2D01"}});
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.service_name, "from-attrs");
  const KeyValues expected = {{"deployment.environment", "prod"}, {"host.name", "nfs-01"}};
  EXPECT_EQ(r.config.resource_attributes, expected);
  const auto named = ParseEnv({{"OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"},
                               {"OTEL_SERVICE_NAME", "uploader-7"}});
  EXPECT_EQ(named.config.service_name, "uploader-7");
}

TEST(TelemetryConfigTest, NumbersParse) {
  const auto r = ParseEnv({{"OTEL_METRIC_EXPORT_INTERVAL", "15000"},
                           {"OTEL_BSP_SCHEDULE_DELAY", " 250 "},
                           {"OTEL_BSP_MAX_QUEUE_SIZE", "64"},
                           {"OTEL_EXPORTER_OTLP_TIMEOUT", "2000"}});
  ASSERT_TRUE(r.errors.empty());
  EXPECT_EQ(r.config.metric_export_interval, std::chrono::milliseconds(15000));
  EXPECT_EQ(r.config.span_schedule_delay, std::chrono::milliseconds(250));
  EXPECT_EQ(r.config.max_queue_size, 64u);
  EXPECT_EQ(r.config.max_export_batch_size, 64u) << "batch is clamped to the queue size";
  EXPECT_EQ(r.config.export_timeout, std::chrono::milliseconds(2000));
}

TEST(TelemetryConfigTest, OneErrorLinePerInvalidVariable) {
  const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"},
                           {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "ftp://x/y"},
                           {"OTEL_METRIC_EXPORT_INTERVAL", "60s"},
                           {"OTEL_BSP_SCHEDULE_DELAY", "-5"},
                           {"OTEL_BSP_MAX_QUEUE_SIZE", "0"},
                           {"OTEL_RESOURCE_ATTRIBUTES", "novalue"},
                           {"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
                           {"OTEL_METRICS_EXPORTER", "prometheus"}});
  std::vector<std::string> vars;
  for (const auto& e : r.errors) vars.push_back(e.substr(0, e.find(':')));
  const std::vector<std::string> expected = {
      "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
      "OTEL_METRICS_EXPORTER",       "OTEL_EXPORTER_OTLP_PROTOCOL",
      "OTEL_RESOURCE_ATTRIBUTES",    "OTEL_METRIC_EXPORT_INTERVAL",
      "OTEL_BSP_SCHEDULE_DELAY",     "OTEL_BSP_MAX_QUEUE_SIZE"};
  EXPECT_EQ(vars, expected);
  for (const auto& e : r.errors) EXPECT_EQ(e.find('\n'), std::string::npos);
}

TEST(TelemetryConfigTest, EndpointErrorsRedactCredentials) {
  // A password holding '/' passes for a path: with a stray CR (a CRLF .env file) or a mistyped
  // scheme, the value is not shown at all.
  for (const char* url : {"http://user:hunter2@ bad host/x?k=1", "https://otel:hun/ter2@c:4318\r",
                          "htps://otel:hun/ter2@c:4318"}) {
    const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", url}});
    ASSERT_EQ(r.errors.size(), 1u) << url;
    EXPECT_EQ(r.errors[0].find("ter2"), std::string::npos) << r.errors[0];
  }
  const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"}});
  ASSERT_EQ(r.errors.size(), 1u);
  EXPECT_EQ(r.errors[0],
            "OTEL_EXPORTER_OTLP_ENDPOINT: must be an http:// or https:// URL with a host, got "
            "\"<unparsable url>\"");
}

// A password holding '/' ends the authority early: curl would take the user for the host, and
// the log the password for the path. Refused, without the value; '@' in a query is no user.
TEST(TelemetryConfigTest, AnAtInThePathIsRefusedUnechoed) {
  for (const char* url :
       {"https://otel:Ab/cd+9Q@collector:4318", "http://otel:12/cd9Q@c/v1?k=a@b"}) {
    const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_ENDPOINT", url}});
    ASSERT_EQ(r.errors.size(), 1u) << url;
    EXPECT_EQ(r.errors[0],
              "OTEL_EXPORTER_OTLP_ENDPOINT: has '@' in its path: write a '/' in a password as %2F");
  }
  for (const char* url : {"https://otel:Ab%2Fcd+9Q@collector:4318", "https://c:4318/v1?k=a@b",
                          "https://u:p?s@c:4318/", "https://c:4318?k=a/b@c"}) {
    const auto r = ParseEnv({{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url}});
    EXPECT_TRUE(r.errors.empty()) << url << ": " << testing::PrintToString(r.errors);
  }
}

TEST(EndpointForLogTest, DropsUserInfoAndQuery) {
  EXPECT_EQ(EndpointForLog("https://u:p@host:4318/v1/traces?key=abc#f"),
            "https://host:4318/v1/traces");
  EXPECT_EQ(EndpointForLog("http://host/p@x"), "http://host/p@x");
  // A password with '#' or '?' in it: user info goes before the URL is cut at those.
  EXPECT_EQ(EndpointForLog("https://user:p#ss@collector:4318"), "https://collector:4318");
  EXPECT_EQ(EndpointForLog("https://user:p?ss@collector:4318/v1/traces?k=1"),
            "https://collector:4318/v1/traces");
  EXPECT_EQ(EndpointForLog("https://user:p@ss@collector:4318/v1"), "https://collector:4318/v1");
  EXPECT_EQ(EndpointForLog("nonsense"), "<unparsable url>");
}

}  // namespace
}  // namespace nbu::telemetry
